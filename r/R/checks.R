# Argument checks and conversions shared by the package's functions (no
# computation): each stops with an error naming the argument.

as_input <- function(x, arg) {
  if (is.integer(x)) {
    storage.mode(x) <- "double"
  } else if (!is.double(x)) {
    what <- if (is.data.frame(x)) "a data.frame (use as.matrix())"
            else paste("an object of class", class(x)[1])
    stop(arg, ": expected a numeric matrix (N x C) or array (N x C x L), got ",
         what, call. = FALSE)
  }
  x
}

# The options nn_batch_norm1d and nn_ghost_batch_norm1d share.
check_module_options <- function(num_features, eps, momentum, affine,
                                 track_running_stats) {
  check_number(num_features, "num_features")
  check_number(eps, "eps")
  if (!is.null(momentum)) check_number(momentum, "momentum")
  check_flag(affine, "affine")
  check_flag(track_running_stats, "track_running_stats")
}

# activation: NULL, "relu" or "leaky_relu"; negative_slope: a finite number.
check_activation <- function(activation, negative_slope) {
  if (!is.null(activation)) {
    if (!is.character(activation) || length(activation) != 1 || is.na(activation)) {
      stop("activation: expected NULL, \"relu\" or \"leaky_relu\", got ",
           if (is.character(activation)) paste(length(activation), "strings")
           else paste("an object of class", class(activation)[1]), call. = FALSE)
    }
    if (!activation %in% c("relu", "leaky_relu")) {
      stop("activation: expected NULL, \"relu\" or \"leaky_relu\", got \"",
           activation, "\"", call. = FALSE)
    }
  }
  check_number(negative_slope, "negative_slope")
  if (!is.finite(negative_slope)) {
    stop("negative_slope: expected a finite number, got ", negative_slope,
         call. = FALSE)
  }
}

check_number <- function(x, arg) {
  if (!is.numeric(x) || length(x) != 1 || is.na(x)) {
    stop(arg, ": expected a single number", call. = FALSE)
  }
}

check_flag <- function(x, arg) {
  if (!is.logical(x) || length(x) != 1 || is.na(x)) {
    stop(arg, ": expected TRUE or FALSE", call. = FALSE)
  }
}

check_string <- function(x, arg) {
  if (!is.character(x) || length(x) != 1 || is.na(x)) {
    stop(arg, ": expected a single string", call. = FALSE)
  }
}

path_arg <- function(path, arg) {
  check_string(path, arg)
  path.expand(path)
}

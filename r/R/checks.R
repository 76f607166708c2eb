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

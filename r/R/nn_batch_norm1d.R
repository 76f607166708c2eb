# nn_batch_norm1d(): R torch's BatchNorm1D module on bn1d's C++ core.
#
# A module is a function (m(input) is the forward pass) of class
# c("nn_batch_norm1d", "nn_module") whose environment holds an external pointer
# to a C++ bn1d::BatchNorm1d. `$` gives its fields and methods. Every
# computation happens in C++; this file only checks and converts arguments.

nn_batch_norm1d <- function(num_features, eps = 1e-05, momentum = 0.1,
                            affine = TRUE, track_running_stats = TRUE,
                            dtype = c("float64", "float32")) {
  dtype <- match.arg(dtype)
  check_number(num_features, "num_features")
  check_number(eps, "eps")
  if (!is.null(momentum)) check_number(momentum, "momentum")
  check_flag(affine, "affine")
  check_flag(track_running_stats, "track_running_stats")
  ptr <- cpp_new(as.double(num_features), as.double(eps),
                 if (is.null(momentum)) NULL else as.double(momentum),
                 affine, track_running_stats, dtype)
  module <- local({
    ptr <- ptr
    function(input) cpp_forward(ptr, as_input(input, "input"))
  })
  class(module) <- c("nn_batch_norm1d", "nn_module")
  module
}

module_ptr <- function(x) get("ptr", envir = environment(unclass(x)),
                              inherits = FALSE)

# Fields and methods reachable with `$`, in the order .DollarNames lists them.
module_fields <- c("training", "weight", "bias", "running_mean",
                   "running_var", "num_batches_tracked", "num_features",
                   "eps", "momentum", "affine", "track_running_stats",
                   "dtype", "parameters", "buffers")
module_methods <- c("forward", "train", "eval", "backward",
                    "reset_parameters", "reset_running_stats", "state_dict",
                    "load_state_dict", "save", "load")

`$.nn_batch_norm1d` <- function(x, name) {
  ptr <- module_ptr(x)
  switch(name,
    training = cpp_is_training(ptr),
    weight = , bias = , running_mean = , running_var = ,
    num_batches_tracked = cpp_get(ptr, name),
    num_features = , eps = , momentum = , affine = , track_running_stats = ,
    dtype = cpp_options(ptr)[[name]],
    parameters = Filter(Negate(is.null), list(weight = cpp_get(ptr, "weight"),
                                              bias = cpp_get(ptr, "bias"))),
    buffers = {
      s <- cpp_state_dict(ptr)
      s[intersect(c("running_mean", "running_var", "num_batches_tracked"),
                  names(s))]
    },
    forward = function(input) cpp_forward(ptr, as_input(input, "input")),
    train = function(mode = TRUE) {
      check_flag(mode, "mode")
      cpp_train(ptr, mode)
      invisible(x)
    },
    eval = function() {
      cpp_train(ptr, FALSE)
      invisible(x)
    },
    backward = function(grad_output) {
      cpp_backward(ptr, as_input(grad_output, "grad_output"))
    },
    reset_parameters = function() {
      cpp_reset_parameters(ptr)
      invisible(x)
    },
    reset_running_stats = function() {
      cpp_reset_running_stats(ptr)
      invisible(x)
    },
    state_dict = function() cpp_state_dict(ptr),
    load_state_dict = function(state_dict, strict = TRUE) {
      if (!is.list(state_dict)) {
        stop("state_dict: expected a named list, got ", class(state_dict)[1],
             call. = FALSE)
      }
      check_flag(strict, "strict")
      cpp_load_state_dict(ptr, state_dict, strict)
      invisible(x)
    },
    save = function(path) {
      cpp_save(ptr, path_arg(path, "path"))
      invisible(x)
    },
    load = function(path, prefix = "") {
      check_string(prefix, "prefix")
      cpp_load(ptr, path_arg(path, "path"), prefix)
      invisible(x)
    },
    stop("nn_batch_norm1d has no field or method '", name, "'", call. = FALSE)
  )
}

`[[.nn_batch_norm1d` <- function(x, i, ...) {
  check_string(i, "i")
  `$.nn_batch_norm1d`(x, i)
}

`$<-.nn_batch_norm1d` <- function(x, name, value) {
  ptr <- module_ptr(x)
  if (name == "training") {
    check_flag(value, "training")
    cpp_train(ptr, value)
  } else if (name %in% c("weight", "bias", "running_mean", "running_var",
                         "num_batches_tracked")) {
    # Through a strict load_state_dict, so that bn1d checks the key, the shape
    # and the dtype, and leaves the module unchanged on error.
    state <- cpp_state_dict(ptr)
    state[name] <- list(value)
    cpp_load_state_dict(ptr, state, TRUE)
  } else {
    stop("cannot set '", name, "' of an nn_batch_norm1d (settable: training, ",
         "weight, bias, running_mean, running_var, num_batches_tracked)",
         call. = FALSE)
  }
  x
}

`[[<-.nn_batch_norm1d` <- function(x, i, value) {
  check_string(i, "i")
  `$<-.nn_batch_norm1d`(x, i, value)
}

.DollarNames.nn_batch_norm1d <- function(x, pattern = "") {
  names <- c(module_fields, module_methods)
  grep(pattern, names, value = TRUE)
}

print.nn_batch_norm1d <- function(x, ...) {
  cat(format(x, ...), sep = "\n")
  invisible(x)
}

format.nn_batch_norm1d <- function(x, ...) {
  ptr <- module_ptr(x)
  opts <- cpp_options(ptr)
  state <- cpp_state_dict(ptr)
  type <- if (opts$dtype == "float32") "Float" else "Double"
  c_ <- opts$num_features
  describe <- function(keys) {
    vapply(keys, function(k) {
      if (k == "num_batches_tracked") sprintf("* %s: Long []", k)
      else sprintf("* %s: %s [1:%d]", k, type, as.integer(c_))
    }, character(1), USE.NAMES = FALSE)
  }
  params <- intersect(c("weight", "bias"), names(state))
  buffers <- intersect(c("running_mean", "running_var", "num_batches_tracked"),
                       names(state))
  rule <- function(title) {
    paste0("-- ", title, " ", strrep("-", max(3, 60 - nchar(title))))
  }
  out <- c(sprintf("An `nn_module` containing %s parameters.",
                   format(length(params) * c_, big.mark = ",",
                          scientific = FALSE)),
           cpp_repr(ptr))
  if (length(params) > 0) out <- c(out, "", rule("Parameters"), describe(params))
  if (length(buffers) > 0) out <- c(out, "", rule("Buffers"), describe(buffers))
  if (!cpp_is_training(ptr)) out <- c(out, "", "(evaluation mode)")
  out
}

# ---- argument checks and conversions (no computation) ----------------------

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

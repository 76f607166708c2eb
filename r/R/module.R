# The fields and methods of the modules (nn_batch_norm1d, nn_ghost_batch_norm1d):
# `$`, `[[`, their assignment forms, completion, print and format, registered
# for both classes in NAMESPACE. Each module's environment holds `ptr`, the
# external pointer to its C++ module.

module_ptr <- function(x) get("ptr", envir = environment(unclass(x)),
                              inherits = FALSE)

# Fields and methods reachable with `$`, in the order .DollarNames lists them;
# a ghost module also has the options virtual_batch_size and split.
module_fields <- c("training", "weight", "bias", "running_mean",
                   "running_var", "num_batches_tracked", "num_features",
                   "eps", "momentum", "affine", "track_running_stats",
                   "dtype", "activation", "negative_slope", "parameters",
                   "buffers")
ghost_fields <- c("virtual_batch_size", "split")
module_methods <- c("forward", "train", "eval", "backward",
                    "reset_parameters", "reset_running_stats", "state_dict",
                    "load_state_dict", "save", "load")

module_names <- function(x) {
  fields <- if (inherits(x, "nn_ghost_batch_norm1d")) c(module_fields, ghost_fields)
            else module_fields
  c(fields, module_methods)
}

module_get <- function(x, name) {
  ptr <- module_ptr(x)
  if (name %in% ghost_fields && inherits(x, "nn_ghost_batch_norm1d")) {
    return(cpp_options(ptr)[[name]])
  }
  switch(name,
    training = cpp_is_training(ptr),
    weight = , bias = , running_mean = , running_var = ,
    num_batches_tracked = cpp_get(ptr, name),
    num_features = , eps = , momentum = , affine = , track_running_stats = ,
    dtype = , activation = , negative_slope = cpp_options(ptr)[[name]],
    parameters = Filter(Negate(is.null), list(weight = cpp_get(ptr, "weight"),
                                              bias = cpp_get(ptr, "bias"))),
    buffers = {
      s <- cpp_state_dict(ptr)
      s[intersect(c("running_mean", "running_var", "num_batches_tracked"),
                  names(s))]
    },
    forward = unclass(x),
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
    stop(class(x)[1], " has no field or method '", name, "'", call. = FALSE)
  )
}

module_get_i <- function(x, i, ...) {
  check_string(i, "i")
  module_get(x, i)
}

module_set <- function(x, name, value) {
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
    stop("cannot set '", name, "' of an ", class(x)[1], " (settable: training, ",
         "weight, bias, running_mean, running_var, num_batches_tracked)",
         call. = FALSE)
  }
  x
}

module_set_i <- function(x, i, value) {
  check_string(i, "i")
  module_set(x, i, value)
}

module_dollar_names <- function(x, pattern = "") {
  grep(pattern, module_names(x), value = TRUE)
}

module_print <- function(x, ...) {
  cat(format(x, ...), sep = "\n")
  invisible(x)
}

module_format <- function(x, ...) {
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

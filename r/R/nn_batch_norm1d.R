# nn_batch_norm1d(): R torch's BatchNorm1D module on bn1d's C++ core, whose
# forward pass also takes the valid positions of padded (N, C, L) batches
# (lengths or mask: masked batch normalization), and which can apply a ReLU or
# LeakyReLU to its output in the same pass (activation: fused activation).
#
# A module is a function (m(input) is the forward pass) of class
# c("nn_batch_norm1d", "nn_module") whose environment holds an external pointer
# to a C++ bn1d::BatchNorm1d; its fields and methods are in module.R. Every
# computation happens in C++; this file only checks and converts arguments.

nn_batch_norm1d <- function(num_features, eps = 1e-05, momentum = 0.1,
                            affine = TRUE, track_running_stats = TRUE,
                            dtype = c("float64", "float32"),
                            activation = NULL, negative_slope = 0.01) {
  dtype <- match.arg(dtype)
  check_module_options(num_features, eps, momentum, affine, track_running_stats)
  check_activation(activation, negative_slope)
  ptr <- cpp_new(as.double(num_features), as.double(eps),
                 if (is.null(momentum)) NULL else as.double(momentum),
                 affine, track_running_stats, dtype,
                 if (is.null(activation)) "none" else activation,
                 as.double(negative_slope))
  module <- local({
    ptr <- ptr
    function(input, lengths = NULL, mask = NULL) {
      input <- as_input(input, "input")
      if (!is.null(lengths) && !is.null(mask)) {
        stop("lengths, mask: expected at most one of them, got both", call. = FALSE)
      }
      if (!is.null(lengths)) lengths <- as_lengths(lengths, dim(input))
      if (!is.null(mask)) check_mask(mask, dim(input))
      cpp_forward(ptr, input, lengths, mask)
    }
  })
  class(module) <- c("nn_batch_norm1d", "nn_module")
  module
}

# ---- the valid positions of an N x C x L input -----------------------------

# Sizes of `input` for the valid positions of `arg`: N and L of a 3-d input.
padded_sizes <- function(input_dim, arg) {
  if (length(input_dim) != 3) {
    stop(arg, ": expected an N x C x L input array, got dims ",
         if (is.null(input_dim)) "NULL" else paste(input_dim, collapse = " x "),
         call. = FALSE)
  }
  c(N = input_dim[[1]], L = input_dim[[3]])
}

# lengths as a double vector: N whole numbers in [0, L].
as_lengths <- function(lengths, input_dim) {
  size <- padded_sizes(input_dim, "lengths")
  if (!is.numeric(lengths) || is.object(lengths) || !is.null(dim(lengths))) {
    stop("lengths: expected an integer or whole-number numeric vector, got ",
         if (is.object(lengths)) paste("an object of class", class(lengths)[1])
         else paste("a", typeof(lengths), if (is.null(dim(lengths))) "vector" else "array"),
         call. = FALSE)
  }
  if (length(lengths) != size[["N"]]) {
    stop("lengths: expected ", size[["N"]], " values (one per sample, dim(input)[1]), got ",
         length(lengths), call. = FALSE)
  }
  bad <- function(what, which) {
    i <- which(which)[1]
    stop("lengths: expected ", what, ", got lengths[", i, "] = ", lengths[i], call. = FALSE)
  }
  if (anyNA(lengths)) bad("no NA", is.na(lengths))
  if (any(!is.finite(lengths) | lengths != trunc(lengths))) {
    bad("whole numbers", !is.finite(lengths) | lengths != trunc(lengths))
  }
  if (any(lengths < 0)) bad("values >= 0", lengths < 0)
  if (any(lengths > size[["L"]])) {
    bad(paste0("values <= ", size[["L"]], " (L, dim(input)[3])"), lengths > size[["L"]])
  }
  as.double(lengths)
}

# mask: a logical N x L matrix without NA (TRUE = valid).
check_mask <- function(mask, input_dim) {
  size <- padded_sizes(input_dim, "mask")
  if (!is.logical(mask) || !is.matrix(mask)) {
    stop("mask: expected a logical N x L matrix, got ",
         if (is.matrix(mask)) paste("a", typeof(mask), "matrix")
         else paste("an object of class", class(mask)[1]),
         call. = FALSE)
  }
  if (!identical(as.numeric(dim(mask)), as.numeric(size))) {
    stop("mask: expected a ", size[["N"]], " x ", size[["L"]],
         " matrix (dim(input)[c(1, 3)]), got ", paste(dim(mask), collapse = " x "),
         call. = FALSE)
  }
  if (anyNA(mask)) {
    stop("mask: expected TRUE or FALSE values, got NA at [",
         paste(which(is.na(mask), arr.ind = TRUE)[1, ], collapse = ", "), "]",
         call. = FALSE)
  }
}

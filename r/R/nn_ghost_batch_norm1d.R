# nn_ghost_batch_norm1d(): ghost (virtual-batch) batch normalization, as
# TabNet's GBN: the loop of one nn_batch_norm1d call per chunk of the batch,
# computed in one C++ call (bn1d::GhostBatchNorm1d). Same fields and methods as
# nn_batch_norm1d (module.R), plus virtual_batch_size and split.

nn_ghost_batch_norm1d <- function(num_features, virtual_batch_size = 128,
                                  momentum = 0.01, split = "chunk", eps = 1e-05,
                                  affine = TRUE, track_running_stats = TRUE,
                                  dtype = c("float64", "float32")) {
  dtype <- match.arg(dtype)
  check_module_options(num_features, eps, momentum, affine, track_running_stats)
  check_number(virtual_batch_size, "virtual_batch_size")
  check_string(split, "split")
  ptr <- cpp_new_ghost(as.double(num_features), as.double(virtual_batch_size),
                       split, as.double(eps),
                       if (is.null(momentum)) NULL else as.double(momentum),
                       affine, track_running_stats, dtype)
  module <- local({
    ptr <- ptr
    function(input) cpp_forward(ptr, as_input(input, "input"), NULL, NULL)
  })
  class(module) <- c("nn_ghost_batch_norm1d", "nn_module")
  module
}

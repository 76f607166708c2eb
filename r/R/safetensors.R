# Reading and writing safetensors files through bn1d's C++ loader and writer.

bn1d_read_safetensors <- function(path, prefix = "") {
  check_string(prefix, "prefix")
  cpp_read_safetensors(path_arg(path, "path"), prefix)
}

bn1d_write_safetensors <- function(tensors, path, dtype = c("float64", "float32"),
                                   metadata = character()) {
  dtype <- match.arg(dtype)
  if (!is.list(tensors)) {
    stop("tensors: expected a named list of numeric arrays", call. = FALSE)
  }
  if (!is.character(metadata)) {
    stop("metadata: expected a named character vector", call. = FALSE)
  }
  cpp_write_safetensors(tensors, path_arg(path, "path"), dtype, metadata)
  invisible(path)
}

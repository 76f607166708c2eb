# Test helpers. Everything computed here is an independent check written in
# plain R (the package itself does no math in R).

# Directory of the repository's torch fixtures (tests/fixtures), from the
# environment variable BN1D_FIXTURES; the tests that need it skip without it.
fixtures_dir <- function() {
  dir <- Sys.getenv("BN1D_FIXTURES", "")
  if (!nzchar(dir)) skip("BN1D_FIXTURES is not set (the repository's tests/fixtures)")
  if (!dir.exists(dir)) stop("BN1D_FIXTURES=", dir, " is not a directory")
  dir
}

fixture_files <- function() {
  files <- list.files(fixtures_dir(), pattern = "\\.safetensors$", full.names = TRUE)
  if (length(files) == 0) stop("no .safetensors files in BN1D_FIXTURES=", fixtures_dir())
  files
}

# Per-channel mean and biased variance of an (N, C) or (N, C, L) array: c is
# the second index.
channel_mean <- function(x) apply(x, 2, mean)
channel_var <- function(x) apply(x, 2, function(v) mean((v - mean(v))^2))

# torch's options, as written in a fixture's metadata.
fixture_module <- function(meta) {
  flag <- function(key) switch(meta[[key]], true = TRUE, false = FALSE,
                               stop("bad flag ", key))
  nn_batch_norm1d(as.numeric(meta[["num_features"]]),
                  eps = as.numeric(meta[["eps"]]),
                  momentum = if (meta[["momentum"]] == "None") NULL
                             else as.numeric(meta[["momentum"]]),
                  affine = flag("affine"),
                  track_running_stats = flag("track_running_stats"),
                  dtype = meta[["dtype"]])
}

# The accuracy rule of tests/test_torch_fixtures.cpp (see its header): float64
# |ours - torch| <= 1e-12 * max(|e|, 1); float32 <= 8 ulps (2^-23) of a scale:
# `scale` per element if given, else max(|e|, 1) ("element") or the tensor's
# largest magnitude ("max").
expect_torch_close <- function(actual, expected, dtype, mode = c("element", "max"),
                               scale = NULL, what = "") {
  mode <- match.arg(mode)
  expect_identical(dim(actual), dim(expected), label = paste(what, "dims"))
  expect_identical(length(actual), length(expected), label = paste(what, "length"))
  err <- abs(as.vector(actual) - as.vector(expected))
  if (dtype == "float64") {
    allowed <- 1e-12 * pmax(abs(as.vector(expected)), 1)
  } else {
    if (is.null(scale)) {
      scale <- if (mode == "element") pmax(abs(as.vector(expected)), 1)
               else rep(max(abs(expected), 1), length(expected))
    }
    allowed <- 8 * 2^-23 * as.vector(scale)
  }
  bad <- !(err <= allowed)
  expect(!any(bad), sprintf("%s: %d of %d elements outside tolerance (worst err %g)",
                            what, sum(bad), length(err), max(err)))
}

# The gradients list `g` of a backward against the fixture's `<prefix>.grad_*`
# tensors; without affine, the weight and bias gradients are NULL.
expect_grads_like_torch <- function(g, f, prefix, dtype, affine, name) {
  expect_torch_close(g$input, f[[paste0(prefix, ".grad_input")]], dtype, "max",
                     what = paste(name, prefix, "grad_input"))
  if (affine) {
    expect_torch_close(g$weight, f[[paste0(prefix, ".grad_weight")]], dtype, "max",
                       what = paste(name, prefix, "grad_weight"))
    expect_torch_close(g$bias, f[[paste0(prefix, ".grad_bias")]], dtype, "max",
                       what = paste(name, prefix, "grad_bias"))
  } else {
    expect_null(g$weight)
    expect_null(g$bias)
  }
}

# torch's float32 output rounding scale: max(|x * alpha| + |beta|, 1) per
# element with alpha = w / sqrt(var + eps), beta = b - mean * alpha (batch
# statistics of x unless running statistics are given).
output_scale <- function(x, weight, bias, eps, running = NULL) {
  C <- dim(x)[2]
  if (is.null(running)) {
    mean <- channel_mean(x)
    var <- channel_var(x)
  } else {
    mean <- running$mean
    var <- running$var
  }
  w <- if (is.null(weight)) rep(1, C) else weight
  b <- if (is.null(bias)) rep(0, C) else bias
  alpha <- w / sqrt(var + eps)
  beta <- b - mean * alpha
  # alpha[c] broadcast along the channel index (the 2nd) of x
  ch <- slice.index(x, 2)
  pmax(abs(x * alpha[ch]) + abs(beta[ch]), 1)
}

# Reads one tensor of a safetensors file directly with readBin, from the JSON
# header (found with a regular expression): an independent check of the
# row-major -> R array conversion. Returns an array of dim `shape`.
read_tensor_raw <- function(path, key) {
  con <- file(path, "rb")
  on.exit(close(con))
  n <- readBin(con, "integer", n = 2, size = 4, endian = "little")
  header_len <- n[1]  # files here are far below 2^31 bytes
  header <- rawToChar(readBin(con, "raw", n = header_len))
  pattern <- paste0('"', gsub(".", "\\.", key, fixed = TRUE),
                    '":\\{"dtype":"([A-Z0-9]+)","shape":\\[([0-9,]*)\\],',
                    '"data_offsets":\\[([0-9]+),([0-9]+)\\]\\}')
  m <- regmatches(header, regexec(pattern, header))[[1]]
  if (length(m) == 0) stop("key ", key, " not found in ", path)
  dtype <- m[2]
  shape <- if (nzchar(m[3])) as.integer(strsplit(m[3], ",")[[1]]) else integer()
  start <- as.numeric(m[4])
  end <- as.numeric(m[5])
  size <- switch(dtype, F32 = 4L, F64 = 8L, I64 = 8L)
  count <- (end - start) / size
  seek(con, 8 + header_len + start)
  values <- if (dtype == "I64") {
    v <- readBin(con, "integer", n = 2 * count, size = 4, endian = "little")
    v[c(TRUE, FALSE)] + 2^32 * v[c(FALSE, TRUE)]  # small non-negative counts
  } else {
    readBin(con, "double", n = count, size = size, endian = "little")
  }
  if (length(shape) <= 1) return(values)
  # Row-major (last index fastest) into R's column-major: fill the reversed
  # dims, then reverse the index order.
  aperm(array(values, rev(shape)), rev(seq_along(shape)))
}

# x rounded to the nearest float32 (via writeBin/readBin: independent of bn1d).
round_f32 <- function(x) {
  r <- readBin(writeBin(as.vector(x), raw(), size = 4), "double", n = length(x), size = 4)
  attributes(r) <- attributes(x)
  r
}

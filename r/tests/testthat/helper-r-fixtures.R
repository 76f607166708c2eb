# Helpers for the masked and ghost fixtures of tests/fixtures/r (written by
# tests/fixtures/r/generate.py with torch 1.13; see the README there).

r_fixture <- function(name) {
  path <- file.path(fixtures_dir(), "r", paste0(name, ".safetensors"))
  if (!file.exists(path)) stop("missing fixture ", path, " (tests/fixtures/r/generate.py)")
  bn1d_read_safetensors(path)
}

# The module options of a fixture's metadata, as arguments of the constructors.
fixture_options <- function(meta) {
  flag <- function(key) switch(meta[[key]], true = TRUE, false = FALSE, stop("bad flag ", key))
  list(num_features = as.numeric(meta[["num_features"]]),
       eps = as.numeric(meta[["eps"]]),
       momentum = if (meta[["momentum"]] == "None") NULL else as.numeric(meta[["momentum"]]),
       affine = flag("affine"), track_running_stats = flag("track_running_stats"),
       dtype = meta[["dtype"]])
}

# Outputs against torch: float64 as expect_torch_close; float32 within 8 ulps
# (2^-23) of the largest magnitude among the input and the output (the rounding
# of x - mean scales with |x|; a wrong statistic is off by far more).
expect_output_like <- function(actual, expected, input, dtype, what) {
  scale <- if (dtype == "float32") rep(max(1, abs(input), abs(expected)), length(expected))
  expect_torch_close(actual, expected, dtype, scale = scale, what = what)
}

# The module's state dict against the fixture's `bn.*` tensors.
expect_state_like <- function(m, f, dtype, name) {
  state <- m$state_dict()
  expect_identical(names(state), sub("^bn\\.", "", grep("^bn\\.", names(f), value = TRUE)))
  for (key in names(state)) {
    expected <- f[[paste0("bn.", key)]]
    if (key == "num_batches_tracked") {
      expect_identical(state[[key]], expected, label = paste(name, key))
    } else {
      expect_torch_close(state[[key]], expected, dtype, what = paste(name, key))
    }
  }
}

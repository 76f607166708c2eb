# Replays the recorded runs of torch.nn.BatchNorm1d in the repository's
# tests/fixtures (see tests/fixtures/README.md there), as
# tests/test_torch_fixtures.cpp does in C++, with the same tolerances.
# Needs BN1D_FIXTURES (skipped without it).

replay_fixture <- function(path) {
  f <- bn1d_read_safetensors(path)
  meta <- attr(f, "metadata")
  dtype <- meta[["dtype"]]
  name <- basename(path)
  m <- fixture_module(meta)
  affine <- meta[["affine"]] == "true"
  track <- meta[["track_running_stats"]] == "true"
  expect_identical(m$dtype, dtype)
  if (affine) {
    m$weight <- f[["init.weight"]]
    m$bias <- f[["init.bias"]]
    expect_identical(m$weight, f[["init.weight"]])
  }
  eps <- as.numeric(meta[["eps"]])
  steps <- as.integer(meta[["train_steps"]])
  for (k in seq_len(steps) - 1) {
    x <- f[[paste0("train.input.", k)]]
    expect_identical(sprintf("[%s]", paste(dim(x), collapse = ", ")), meta[["shape"]])
    y <- m(x)
    expect_torch_close(y, f[[paste0("train.output.", k)]], dtype,
                       scale = output_scale(x, m$weight, m$bias, eps),
                       what = paste(name, "train.output", k))
  }
  g <- m$backward(f[["train.grad_output"]])
  expect_identical(names(g), c("input", "weight", "bias"))
  expect_grads_like_torch(g, f, "train", dtype, affine, name)

  # State: torch's keys in torch's order, the same values.
  state <- m$state_dict()
  torch_keys <- sub("^bn\\.", "", grep("^bn\\.", names(f), value = TRUE))
  expect_identical(names(state), torch_keys)
  for (key in names(state)) {
    if (key == "num_batches_tracked") {
      expect_identical(state[[key]], f[["bn.num_batches_tracked"]])
    } else {
      expect_torch_close(state[[key]], f[[paste0("bn.", key)]], dtype,
                         what = paste(name, key))
    }
  }
  if (track) {
    expect_identical(m$num_batches_tracked, as.numeric(steps))
  } else {
    expect_null(m$running_mean)
    expect_null(m$running_var)
    expect_identical(m$num_batches_tracked, 0)
  }

  # Eval forward and backward.
  m$eval()
  xe <- f[["eval.input"]]
  running <- if (track) list(mean = f[["bn.running_mean"]], var = f[["bn.running_var"]])
  ye <- m(xe)
  eval_scale <- output_scale(xe, m$weight, m$bias, eps, running)
  expect_torch_close(ye, f[["eval.output"]], dtype, scale = eval_scale,
                     what = paste(name, "eval.output"))
  g <- m$backward(f[["eval.grad_output"]])
  expect_grads_like_torch(g, f, "eval", dtype, affine, name)
  if (track) expect_identical(m$num_batches_tracked, as.numeric(steps))

  # A fresh module loading torch's state (the "bn." layer of the whole-model
  # file) gives torch's eval output, and the same output as the trained one.
  m2 <- fixture_module(meta)
  m2$load(path, prefix = "bn.")
  for (key in names(state)) {
    expect_identical(m2$state_dict()[[key]], f[[paste0("bn.", key)]])
  }
  m2$eval()
  y2 <- m2(xe)
  expect_torch_close(y2, f[["eval.output"]], dtype, scale = eval_scale,
                     what = paste(name, "loaded eval.output"))
  if (track) expect_identical(y2, m2$forward(xe))

  # The whole file is not one module's state: strict load fails, changes nothing.
  before <- m2$state_dict()
  expect_error(m2$load(path), "Unexpected key")
  expect_identical(m2$state_dict(), before)
  expect_false(m2$training)
}

test_that("outputs, gradients and states match every torch fixture", {
  files <- fixture_files()
  # the fixtures tests/reference/generate.py writes (a missing one is a failure)
  known <- c("f32_2d_default", "f32_3d_channels_last", "f64_3d", "f64_2d_cumulative",
             "f32_3d_no_affine", "f32_2d_no_running_stats", "f64_3d_eps1e-3_momentum0.5",
             "f32_3d_wide", "f64_3d_no_affine_no_running_stats", "f32_2d_cumulative_pair")
  expect_setequal(intersect(known, sub("\\.safetensors$", "", basename(files))), known)
  for (path in files) replay_fixture(path)
})

test_that("float64 fixtures: a state written by torch loads exactly into R", {
  for (path in grep("/f64_", fixture_files(), value = TRUE)) {
    f <- bn1d_read_safetensors(path, prefix = "bn.")
    expect_true(all(startsWith(names(f), "bn.")))
    m <- fixture_module(attr(f, "metadata"))
    m$load(path, prefix = "bn.")
    s <- m$state_dict()
    expect_identical(unname(s), unname(f[sprintf("bn.%s", names(s))]))
  }
})

test_that("arrays read from a fixture keep torch's indexing ([n, c, l])", {
  for (path in fixture_files()) {
    f <- bn1d_read_safetensors(path)
    for (key in c("train.input.0", "eval.output", "other.weight")) {
      expect_identical(f[[key]], read_tensor_raw(path, key), label = paste(basename(path), key))
    }
    if ("bn.num_batches_tracked" %in% names(f)) {
      expect_identical(f[["bn.num_batches_tracked"]],
                       read_tensor_raw(path, "bn.num_batches_tracked"))
    }
  }
})

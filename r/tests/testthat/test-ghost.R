# nn_ghost_batch_norm1d: one BatchNorm1d call per virtual batch. Oracles: the
# torch 1.13 chunk loop (tests/fixtures/r/ghost_*) and hand-derived values.

replay_ghost <- function(name) {
  f <- r_fixture(name)
  meta <- attr(f, "metadata")
  dtype <- meta[["dtype"]]
  args <- c(fixture_options(meta),
            list(virtual_batch_size = as.numeric(meta[["virtual_batch_size"]]),
                 split = meta[["split"]]))
  m <- do.call(nn_ghost_batch_norm1d, args)
  expect_identical(m$split, meta[["split"]])
  if (!is.null(f[["init.weight"]])) {
    m$weight <- f[["init.weight"]]
    m$bias <- f[["init.bias"]]
  }
  for (k in 0:2) {
    x <- f[[paste0("train.input.", k)]]
    expect_output_like(m(x), f[[paste0("train.output.", k)]], x, dtype,
                       paste(name, "train.output", k))
  }
  expect_grads_like_torch(m$backward(f[["train.grad_output"]]), f, "train", dtype,
                          !is.null(m$weight), name)
  expect_state_like(m, f, dtype, name)
  if (m$track_running_stats) {  # one count per chunk
    chunks <- sapply(0:2, function(k) length(f[[paste0("train.chunks.", k)]]))
    expect_identical(m$num_batches_tracked, as.numeric(sum(chunks)))
  }
  m$eval()
  x <- f[["eval.input"]]
  expect_output_like(m$forward(x), f[["eval.output"]], x, dtype, paste(name, "eval.output"))
  expect_grads_like_torch(m$backward(f[["eval.grad_output"]]), f, "eval", dtype,
                          !is.null(m$weight), name)
  expect_state_like(m, f, dtype, name)
}

test_that("outputs, gradients and running statistics equal torch's chunk loop", {
  for (name in c("ghost_chunk_f64", "ghost_chunk_f32_3d", "ghost_chunk_tabnet",
                 "ghost_fixed_f64_joined", "ghost_fixed_f64_3d",
                 "ghost_chunk_f64_no_running_stats")) {
    replay_ghost(name)
  }
})

test_that("defaults, fields and printing", {
  m <- nn_ghost_batch_norm1d(4)
  expect_s3_class(m, c("nn_ghost_batch_norm1d", "nn_module"), exact = TRUE)
  expect_identical(m$virtual_batch_size, 128)
  expect_identical(m$momentum, 0.01)
  expect_identical(m$split, "chunk")
  expect_identical(m$eps, 1e-5)
  expect_true(m$affine)
  expect_true(m$track_running_stats)
  expect_identical(m$dtype, "float64")
  expect_identical(m$weight, rep(1, 4))
  expect_identical(names(m$buffers), c("running_mean", "running_var", "num_batches_tracked"))
  expect_true(all(c("virtual_batch_size", "split", "state_dict") %in% utils::.DollarNames(m)))
  expect_false("split" %in% utils::.DollarNames(nn_batch_norm1d(4)))
  expect_error(nn_batch_norm1d(4)$split, "nn_batch_norm1d has no field or method 'split'")
  expect_error(m$nothing, "nn_ghost_batch_norm1d has no field or method 'nothing'")
  expect_error(m$split <- "fixed", "cannot set 'split' of an nn_ghost_batch_norm1d")
  expect_output(print(m), "An `nn_module` containing 8 parameters.", fixed = TRUE)
  expect_output(print(m), "GhostBatchNorm1d(4, virtual_batch_size=128, split=chunk",
                fixed = TRUE)
  m2 <- nn_ghost_batch_norm1d(2, virtual_batch_size = 3L, split = "fixed", momentum = NULL,
                              affine = FALSE, dtype = "float32")
  expect_identical(m2$virtual_batch_size, 3)
  expect_identical(m2$split, "fixed")
  expect_null(m2$momentum)
  expect_null(m2$weight)
  expect_identical(m2$dtype, "float32")
})

test_that("a hand-derived example: two virtual batches of two rows", {
  m <- nn_ghost_batch_norm1d(1, virtual_batch_size = 2)
  x <- matrix(c(1, 3, 10, 30), 4, 1)
  y <- m(x)
  # chunk 1: mean 2, biased variance 1; chunk 2: mean 20, biased variance 100
  expect_equal(as.vector(y), c(-1, 1, -10, 10) / sqrt(c(1, 1, 100, 100) + 1e-5),
               tolerance = 1e-14)
  # momentum 0.01 applied per chunk, in order; unbiased variances 2 and 200
  expect_equal(m$running_mean, 0.99 * (0.01 * 2) + 0.01 * 20, tolerance = 1e-14)
  expect_equal(m$running_var, 0.99 * (0.99 + 0.01 * 2) + 0.01 * 200, tolerance = 1e-14)
  expect_identical(m$num_batches_tracked, 2)
  # a grad_output of ones: each chunk's input gradient is 0, the bias gradient counts rows
  g <- m$backward(matrix(1, 4, 1))
  expect_equal(g$input, matrix(0, 4, 1), tolerance = 1e-12)
  expect_identical(g$bias, 4)
  # eval: the whole batch with the running statistics
  m$eval()
  expect_equal(m(x), (x - m$running_mean) / sqrt(m$running_var + 1e-5), tolerance = 1e-14)
  expect_identical(m$num_batches_tracked, 2)
})

test_that("fixed split: a one-row remainder joins the chunk before it", {
  x <- matrix(c(1, 3, 10, 30, 50), 5, 1)
  m <- nn_ghost_batch_norm1d(1, virtual_batch_size = 2, split = "fixed")
  y <- m(x)
  v <- c(10, 30, 50)  # chunks: rows 1-2, rows 3-5
  expect_equal(as.vector(y), c(c(-1, 1) / sqrt(1 + 1e-5),
                               (v - 30) / sqrt(mean((v - 30)^2) + 1e-5)), tolerance = 1e-14)
  expect_identical(m$num_batches_tracked, 2)
})

test_that("errors: a one-row chunk, bad options; nothing changes", {
  m <- nn_ghost_batch_norm1d(2, virtual_batch_size = 2)
  # torch.chunk(3 rows, 2 chunks): 2 rows, then 1 row
  expect_error(m(matrix(c(1, 2, 3, 4, 5, 6), 3, 2)),
               "Expected more than 1 value per channel when training", fixed = TRUE)
  expect_identical(m$num_batches_tracked, 0)
  expect_identical(m$running_mean, c(0, 0))
  expect_error(m(array(0, c(2, 3, 4))), "channels")
  expect_error(nn_ghost_batch_norm1d(2, virtual_batch_size = 0), "virtual_batch_size")
  expect_error(nn_ghost_batch_norm1d(2, virtual_batch_size = 2.5),
               "virtual_batch_size: expected a whole number")
  expect_error(nn_ghost_batch_norm1d(2, virtual_batch_size = "a"),
               "virtual_batch_size: expected a single number")
  expect_error(nn_ghost_batch_norm1d(2, split = "blocks"),
               "split: expected \"chunk\" or \"fixed\", got \"blocks\"", fixed = TRUE)
  expect_error(nn_ghost_batch_norm1d(2, split = NA_character_), "split: expected a single string")
  expect_error(nn_ghost_batch_norm1d(0), "num_features")
  expect_error(nn_ghost_batch_norm1d(2, momentum = 2), "momentum")
})

test_that("a ghost module's state is a BatchNorm1d's: files and state dicts move both ways", {
  set.seed(21)
  g <- nn_ghost_batch_norm1d(3, virtual_batch_size = 4)
  g(matrix(rnorm(30), 10, 3))
  path <- tempfile(fileext = ".safetensors")
  g$save(path)
  b <- nn_batch_norm1d(3)$load(path)
  expect_identical(b$state_dict(), g$state_dict())
  g2 <- nn_ghost_batch_norm1d(3)
  g2$load_state_dict(b$state_dict())
  expect_identical(g2$state_dict(), g$state_dict())
  g2$eval()
  b$eval()
  x <- matrix(rnorm(15), 5, 3)
  expect_identical(g2(x), b(x))
  g2$reset_running_stats()
  expect_identical(g2$num_batches_tracked, 0)
  unlink(path)
})

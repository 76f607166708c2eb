# Masked BatchNorm1d: m(x, lengths = ) and m(x, mask = ) on N x C x L arrays.
# Oracles: torch 1.13 on the packed valid values (tests/fixtures/r/masked_*)
# and values derived by hand in R.

# The fixture's valid positions of `stage` ("train.0", "eval"): lengths when the
# file has them (else NULL), and the N x L logical mask.
fixture_valid <- function(f, stage) {
  key <- function(what) sub("^(train|eval)", paste0("\\1.", what), stage)
  list(lengths = f[[key("lengths")]], mask = f[[key("mask")]] == 1)
}

replay_masked <- function(name, use_mask) {
  f <- r_fixture(name)
  meta <- attr(f, "metadata")
  dtype <- meta[["dtype"]]
  m <- do.call(nn_batch_norm1d, fixture_options(meta))
  if (!is.null(f[["init.weight"]])) {
    m$weight <- f[["init.weight"]]
    m$bias <- f[["init.bias"]]
  }
  run <- function(stage) {
    x <- f[[sub("^(train|eval)", "\\1.input", stage)]]
    v <- fixture_valid(f, stage)
    y <- if (use_mask) m(x, mask = v$mask) else m(x, lengths = v$lengths)
    expected <- f[[sub("^(train|eval)", "\\1.output", stage)]]
    expect_output_like(y, expected, x, dtype, paste(name, stage))
    # the padding is exactly 0
    pad <- !v$mask[slice.index(x, 1) + dim(x)[1] * (slice.index(x, 3) - 1)]
    expect_true(all(y[pad] == 0), label = paste(name, stage, "zero padding"))
  }
  for (k in 0:2) run(paste0("train.", k))
  expect_grads_like_torch(m$backward(f[["train.grad_output"]]), f, "train", dtype,
                          !is.null(m$weight), name)
  expect_state_like(m, f, dtype, name)
  m$eval()
  run("eval")
  expect_grads_like_torch(m$backward(f[["eval.grad_output"]]), f, "eval", dtype,
                          !is.null(m$weight), name)
  expect_state_like(m, f, dtype, name)
  m
}

test_that("lengths and masks: outputs, gradients, running statistics as torch on packed values", {
  for (name in c("masked_f64_lengths", "masked_f64_cumulative_no_affine")) {
    by_lengths <- replay_masked(name, use_mask = FALSE)
    by_mask <- replay_masked(name, use_mask = TRUE)
    expect_identical(by_mask$state_dict(), by_lengths$state_dict())
  }
  for (name in c("masked_f32_mask", "masked_f32_no_running_stats")) {
    replay_masked(name, use_mask = TRUE)
  }
})

test_that("a hand-derived example: statistics over the valid values only", {
  # N = 2, C = 2, L = 3; row 1 has 3 valid positions, row 2 one.
  x <- array(c(1, 100,   # [n, c = 1, l = 1]
               5, 100,   # [n, c = 2, l = 1]
               2, 100,   # l = 2
               7, 100,
               3, 100,   # l = 3
               9, 100), c(2, 2, 3))
  # channel 1 valid values: 1, 2, 3, 100 (row 2, l = 1); channel 2: 5, 7, 9, 100
  v1 <- c(1, 2, 3, 100)
  v2 <- c(5, 7, 9, 100)
  m <- nn_batch_norm1d(2)
  y <- m(x, lengths = c(3L, 1L))
  norm <- function(v) (v - mean(v)) / sqrt(mean((v - mean(v))^2) + 1e-5)
  expect_equal(c(y[1, 1, ], y[2, 1, 1]), norm(v1), tolerance = 1e-14)
  expect_equal(c(y[1, 2, ], y[2, 2, 1]), norm(v2), tolerance = 1e-14)
  expect_identical(c(y[2, , 2], y[2, , 3]), c(0, 0, 0, 0))
  # running statistics: momentum 0.1, unbiased variance over the 4 valid values
  expect_equal(m$running_mean, 0.1 * c(mean(v1), mean(v2)), tolerance = 1e-14)
  expect_equal(m$running_var, 0.9 + 0.1 * c(var(v1), var(v2)), tolerance = 1e-14)
  expect_identical(m$num_batches_tracked, 1)
  # the same positions as a mask (a numeric lengths vector too) give the same bits
  mask <- matrix(c(TRUE, TRUE, TRUE, FALSE, TRUE, FALSE), 2, 3)
  expect_identical(nn_batch_norm1d(2)(x, mask = mask), y)
  expect_identical(nn_batch_norm1d(2)$forward(x, lengths = c(3, 1)), y)
  # backward: 0 at the padding; for grad_output 1 the valid gradients are 0
  # (the mean absorbs a constant) and the bias gradient counts the valid values
  g <- m$backward(array(1, dim(x)))
  expect_equal(g$input, array(0, dim(x)), tolerance = 1e-12)
  expect_identical(g$bias, c(4, 4))
  # eval: the running statistics at the valid positions, 0 at the padding
  m$eval()
  ye <- m(x, lengths = c(1, 3))
  rm <- m$running_mean
  rv <- m$running_var
  expect_equal(ye[1, , 1], (x[1, , 1] - rm) / sqrt(rv + 1e-5), tolerance = 1e-14)
  expect_equal(ye[2, , ], (x[2, , ] - rm) / sqrt(rv + 1e-5), tolerance = 1e-14)
  expect_identical(ye[1, , 2:3], matrix(0, 2, 2))
  expect_identical(m$num_batches_tracked, 1)
})

test_that("float32 modules take lengths and masks too", {
  x <- array(c(1, 2, 3, 4, 5, 6, 7, 8), c(2, 1, 4))  # x[n, 1, l] = n + 2 (l - 1)
  y <- nn_batch_norm1d(1, dtype = "float32")(x, lengths = c(2, 1))
  v <- c(1, 3, 2)  # x[1, 1, 1:2], x[2, 1, 1]
  expected <- round_f32((v - mean(v)) / sqrt(mean((v - mean(v))^2) + 1e-5))
  expect_equal(c(y[1, 1, 1:2], y[2, 1, 1]), expected, tolerance = 1e-6)
  expect_identical(c(y[1, 1, 3:4], y[2, 1, 2:4]), rep(0, 5))
})

test_that("bad lengths and masks are errors naming them; nothing changes", {
  set.seed(20)
  x <- array(rnorm(2 * 3 * 4), c(2, 3, 4))
  m <- nn_batch_norm1d(3)
  m(x, lengths = c(4, 2))
  before <- m$state_dict()
  expect_error(m(x, lengths = c(4, NA)), "lengths: expected no NA, got lengths[2] = NA",
               fixed = TRUE)
  expect_error(m(x, lengths = c(2.5, 1)), "lengths: expected whole numbers, got lengths[1] = 2.5",
               fixed = TRUE)
  expect_error(m(x, lengths = c(Inf, 1)), "lengths: expected whole numbers")
  expect_error(m(x, lengths = c(1, -1)), "lengths: expected values >= 0, got lengths[2] = -1",
               fixed = TRUE)
  expect_error(m(x, lengths = c(5, 1)), "lengths: expected values <= 4", fixed = TRUE)
  expect_error(m(x, lengths = c(1, 2, 3)),
               "lengths: expected 2 values (one per sample, dim(input)[1]), got 3", fixed = TRUE)
  expect_error(m(x, lengths = "2"), "lengths: expected an integer or whole-number numeric vector")
  expect_error(m(x, lengths = factor(c(1, 2))), "lengths: expected an integer")
  expect_error(m(matrix(0, 2, 3), lengths = c(1, 1)),
               "lengths: expected an N x C x L input array, got dims 2 x 3", fixed = TRUE)
  mask <- matrix(TRUE, 2, 4)
  expect_error(m(x, lengths = c(1, 1), mask = mask), "lengths, mask: expected at most one")
  mask[2, 3] <- NA
  expect_error(m(x, mask = mask), "mask: expected TRUE or FALSE values, got NA at [2, 3]",
               fixed = TRUE)
  expect_error(m(x, mask = matrix(TRUE, 2, 5)),
               "mask: expected a 2 x 4 matrix (dim(input)[c(1, 3)]), got 2 x 5", fixed = TRUE)
  expect_error(m(x, mask = matrix(1, 2, 4)), "mask: expected a logical N x L matrix, got a double")
  expect_error(m(x, mask = rep(TRUE, 8)), "mask: expected a logical N x L matrix")
  # one valid value per channel, or none, cannot give training statistics
  expect_error(m(x, lengths = c(1, 0)), "more than 1 value per channel")
  expect_error(m(x, lengths = c(0, 0)), "expected at least one valid position")
  expect_error(m(x, mask = matrix(FALSE, 2, 4)), "expected at least one valid position")
  expect_identical(m$state_dict(), before)
  # backward still belongs to the last successful forward (lengths 4, 2)
  g <- m$backward(array(1, dim(x)))
  expect_identical(g$input[2, , 3:4], matrix(0, 3, 2))
  expect_identical(g$bias, rep(6, 3))
})

test_that("ghost modules take no lengths", {
  expect_error(nn_ghost_batch_norm1d(3)(array(0, c(2, 3, 4)), lengths = c(1, 1)),
               "unused argument")
})

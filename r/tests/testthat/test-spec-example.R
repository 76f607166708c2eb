# The example of R torch's nn_batch_norm1d documentation (the spec), with an R
# matrix instead of torch_randn(20, 100).

test_that("the spec's example runs as written, with and without affine", {
  set.seed(1)
  # With Learnable Parameters
  m <- nn_batch_norm1d(100)
  input <- matrix(rnorm(20 * 100), 20, 100)
  output <- m(input)
  expect_true(is.matrix(output))
  expect_identical(dim(output), c(20L, 100L))
  # Training mode: batch mean and biased variance; weight 1, bias 0.
  expect_equal(channel_mean(output), rep(0, 100), tolerance = 1e-12)
  v <- channel_var(input)
  expect_equal(channel_var(output), v / (v + 1e-5), tolerance = 1e-12)
  expect_equal(channel_var(output), rep(1, 100), tolerance = 1e-4)
  # Independent check of every element.
  expected <- sweep(sweep(input, 2, channel_mean(input)), 2, sqrt(v + 1e-5), "/")
  expect_equal(output, expected, tolerance = 1e-12)
  expect_identical(length(m$weight), 100L)

  # Without Learnable Parameters
  m <- nn_batch_norm1d(100, affine = FALSE)
  input <- matrix(rnorm(20 * 100), 20, 100)
  output <- m(input)
  expect_identical(dim(output), c(20L, 100L))
  expect_equal(channel_mean(output), rep(0, 100), tolerance = 1e-12)
  expect_equal(channel_var(output), rep(1, 100), tolerance = 1e-4)
  expect_null(m$weight)
  expect_null(m$bias)
})

test_that("3-d input (N x C x L): statistics per channel over N and L", {
  set.seed(2)
  x <- array(rnorm(4 * 3 * 5, mean = 3, sd = 2), c(4, 3, 5))
  m <- nn_batch_norm1d(3)
  y <- m(x)
  expect_identical(dim(y), c(4L, 3L, 5L))
  mu <- channel_mean(x)
  v <- channel_var(x)
  expected <- (x - mu[slice.index(x, 2)]) / sqrt(v[slice.index(x, 2)] + 1e-5)
  expect_equal(y, expected, tolerance = 1e-12)
  # running statistics use the unbiased variance
  n <- 4 * 5
  expect_equal(m$running_mean, 0.1 * mu, tolerance = 1e-12)
  expect_equal(m$running_var, 0.9 + 0.1 * v * n / (n - 1), tolerance = 1e-12)
  expect_identical(m$num_batches_tracked, 1)
})

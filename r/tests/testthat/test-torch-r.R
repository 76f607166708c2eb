# R torch's own nn_batch_norm1d test (tests/testthat/test-nn-batchnorm.R).

test_that("ones(2, 1), 10 training steps: R torch's expected values", {
  m <- nn_batch_norm1d(1)
  x <- matrix(1, 2, 1)
  for (i in 1:10) out <- m(x)
  expect_equal(round(m$running_mean, 4), 0.6513)
  expect_equal(round(m$running_var, 4), 0.3487)
  m$eval()
  y <- m(x)
  expect_equal(round(as.vector(y), 4), c(0.5905, 0.5905))

  # The closed form: the batch mean is 1 and the batch variance 0 at each step.
  k <- 10
  rm <- 1 - 0.9^k
  rv <- 0.9^k
  expect_equal(m$running_mean, rm, tolerance = 1e-14)
  expect_equal(m$running_var, rv, tolerance = 1e-14)
  expect_equal(as.vector(y), rep((1 - rm) / sqrt(rv + 1e-5), 2), tolerance = 1e-14)
  expect_identical(m$num_batches_tracked, 10)
})

test_that("momentum = NULL gives the cumulative moving average", {
  set.seed(3)
  m <- nn_batch_norm1d(2, momentum = NULL)
  expect_null(m$momentum)
  xs <- lapply(1:4, function(i) matrix(rnorm(10, mean = i), 5, 2))
  for (x in xs) m(x)
  means <- sapply(xs, channel_mean)
  vars <- sapply(xs, function(x) apply(x, 2, var))  # unbiased
  expect_equal(m$running_mean, rowMeans(means), tolerance = 1e-12)
  # running_var starts at 1 and the first step has factor 1/1: the average of
  # the unbiased batch variances
  expect_equal(m$running_var, rowMeans(vars), tolerance = 1e-12)
  expect_identical(m$num_batches_tracked, 4)
})

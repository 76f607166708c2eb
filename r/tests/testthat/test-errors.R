# bn1d's C++ errors reach R as R errors carrying the C++ message.

test_that("input rank: expected 2D or 3D input", {
  m <- nn_batch_norm1d(3)
  expect_error(m(array(0, c(2, 3, 4, 5))), "expected 2D or 3D input (got 4D input)",
               fixed = TRUE)
  expect_error(m(c(1, 2, 3)), "expected 2D or 3D input (got 1D input)", fixed = TRUE)
  expect_error(m(array(0, c(2, 3, 4, 5))), class = "error")
})

test_that("one value per channel in training is an error (R torch writes NaN)", {
  m <- nn_batch_norm1d(100)
  expect_error(m(matrix(0, 1, 100)),
    "Expected more than 1 value per channel when training, got input size [1, 100]",
    fixed = TRUE)
  expect_error(m(array(0, c(1, 100, 1))), "more than 1 value per channel", fixed = TRUE)
  # nothing changed: no NaN in the running variance, no batch counted
  expect_identical(m$running_var, rep(1, 100))
  expect_identical(m$num_batches_tracked, 0)
  # in eval mode with running statistics a single sample is fine
  m$eval()
  expect_identical(dim(m(matrix(0, 1, 100))), c(1L, 100L))
  # without running statistics eval mode needs batch statistics too
  m <- nn_batch_norm1d(2, track_running_stats = FALSE)
  m$eval()
  expect_error(m(matrix(0, 1, 2)), "more than 1 value per channel")
})

test_that("channel count, dtype and argument errors", {
  m <- nn_batch_norm1d(3)
  expect_error(m(matrix(0, 4, 5)),
               "BatchNorm1d(3): expected input with 3 channels (num_features), got 5 channels",
               fixed = TRUE)
  expect_error(m("a"), "input: expected a numeric matrix")
  expect_error(m(data.frame(a = 1:2)), "use as.matrix()", fixed = TRUE)
  expect_error(m(matrix(TRUE, 2, 3)), "expected a numeric matrix")
  expect_error(m$backward(matrix(0, 4, 3)), "backward called before forward")
  m(matrix(rnorm(12), 4, 3))
  expect_error(m$backward(matrix(0, 5, 3)), "grad_output")
  expect_error(nn_batch_norm1d(0), "num_features: expected a positive channel count, got 0")
  expect_error(nn_batch_norm1d(2.5), "num_features: expected a whole number")
  expect_error(nn_batch_norm1d(2, eps = -1), "eps")
  expect_error(nn_batch_norm1d(2, momentum = 2), "momentum")
  expect_error(nn_batch_norm1d(2, affine = NA), "affine: expected TRUE or FALSE")
  expect_error(nn_batch_norm1d(2, dtype = "int64"), "should be one of")
  expect_error(nn_batch_norm1d("2"), "num_features: expected a single number")
})

test_that("safetensors errors", {
  path <- tempfile(fileext = ".safetensors")
  writeBin(as.raw(c(255, 0, 0, 0, 0, 0, 0, 0, 1, 2)), path)
  expect_error(bn1d_read_safetensors(path), class = "error")
  expect_error(bn1d_read_safetensors(tempfile()), class = "error")
  expect_error(bn1d_write_safetensors(list(1), path), "named")
  expect_error(bn1d_write_safetensors(list(a = "x"), path), "expected a numeric vector")
  unlink(path)
})

test_that("a serialized module is reported as invalid, not crashing", {
  m <- nn_batch_norm1d(3)
  m2 <- unserialize(serialize(m, NULL))
  expect_error(m2$weight, "no longer valid")
  expect_error(m2(matrix(0, 2, 3)), "no longer valid")
  expect_identical(m$weight, c(1, 1, 1))
})

test_that("an empty batch gives an empty output and changes nothing", {
  m <- nn_batch_norm1d(3)
  y <- m(matrix(0, 0, 3))
  expect_identical(dim(y), c(0L, 3L))
  expect_identical(m$num_batches_tracked, 0)
})

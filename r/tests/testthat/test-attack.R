# Issue 23: promises kept under attack (unexpected keys, factors, large files).

test_that("strict = FALSE ignores unexpected keys without converting their values", {
  m <- nn_batch_norm1d(3)
  state <- m$state_dict()
  state$weight <- c(2, 2, 2)
  for (extra in list("x", list(1), factor(c("a", "b")), NULL, function() 1,
                     complex(real = 1, imaginary = 1))) {
    s <- state
    s["extra"] <- list(extra)
    m$load_state_dict(s, strict = FALSE)
    expect_identical(m$weight, c(2, 2, 2))
    expect_error(m$load_state_dict(s), 'Unexpected key(s) in state_dict: "extra"',
                 fixed = TRUE)
  }
  # keys a module without affine or running statistics lacks are unexpected too
  n <- nn_batch_norm1d(3, affine = FALSE, track_running_stats = FALSE)
  n$load_state_dict(list(weight = "x", running_var = factor("a")), strict = FALSE)
  expect_error(n$load_state_dict(list(weight = "x")), "Unexpected key", fixed = TRUE)
  # expected keys are still checked
  expect_error(m$load_state_dict(list(weight = "x"), strict = FALSE),
               "weight: expected a numeric vector")
})

test_that("factors are rejected as parameters and state values, as they are as input", {
  m <- nn_batch_norm1d(2)
  f <- factor(c("10", "20"))
  expect_error(m$weight <- f, "weight: expected a numeric vector, got a factor")
  expect_error(m$running_var <- f, "running_var: expected a numeric vector, got a factor")
  expect_error(m$num_batches_tracked <- factor("3"), "got a factor")
  s <- m$state_dict()
  s$bias <- f
  expect_error(m$load_state_dict(s), "bias: expected a numeric vector, got a factor")
  expect_error(m$load_state_dict(s, strict = FALSE), "got a factor")
  expect_identical(m$weight, c(1, 1))
  expect_identical(m$bias, c(0, 0))
  path <- tempfile(fileext = ".safetensors")
  expect_error(bn1d_write_safetensors(list(a = f), path), "a: expected a numeric vector")
  expect_false(file.exists(path))
  expect_error(m(factor(1:4)), "expected a numeric matrix")
  expect_error(nn_batch_norm1d(factor(2)), "num_features")
})

test_that("bn1d_read_safetensors converts every dtype and layout into R exactly", {
  path <- tempfile(fileext = ".safetensors")
  a <- array(seq_len(24) / 8, c(2, 3, 4))
  for (dtype in c("float32", "float64")) {
    bn1d_write_safetensors(list(a = a, v = c(0.5, -1), s = 3,
                                layer.num_batches_tracked = 7),
                           path, dtype = dtype)
    x <- bn1d_read_safetensors(path)
    expect_identical(x$a, a)
    expect_identical(x$v, c(0.5, -1))
    expect_identical(x$s, 3)
    expect_identical(x$layer.num_batches_tracked, 7)
    expect_identical(names(bn1d_read_safetensors(path, prefix = "layer.")),
                     "layer.num_batches_tracked")
  }
  unlink(path)
})

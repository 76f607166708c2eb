# The module interface: fields, methods, modes, state, files, printing.

test_that("defaults and fields follow the spec", {
  m <- nn_batch_norm1d(5)
  expect_s3_class(m, c("nn_batch_norm1d", "nn_module"), exact = TRUE)
  expect_true(is.function(m))
  expect_identical(m$num_features, 5)
  expect_identical(m$eps, 1e-5)
  expect_identical(m$momentum, 0.1)
  expect_true(m$affine)
  expect_true(m$track_running_stats)
  expect_identical(m$dtype, "float64")
  expect_true(m$training)
  expect_identical(m$weight, rep(1, 5))
  expect_identical(m$bias, rep(0, 5))
  expect_identical(m$running_mean, rep(0, 5))
  expect_identical(m$running_var, rep(1, 5))
  expect_identical(m$num_batches_tracked, 0)
  expect_identical(names(m$parameters), c("weight", "bias"))
  expect_identical(names(m$buffers), c("running_mean", "running_var", "num_batches_tracked"))
  expect_identical(m[["weight"]], m$weight)
  expect_error(m$no_such_field, "no field or method 'no_such_field'")
  expect_true(all(c("weight", "train", "state_dict") %in% utils::.DollarNames(m, "")))
  expect_identical(utils::.DollarNames(m, "^run"), c("running_mean", "running_var"))

  m <- nn_batch_norm1d(3, affine = FALSE, track_running_stats = FALSE)
  expect_null(m$weight)
  expect_null(m$bias)
  expect_null(m$running_mean)
  expect_null(m$running_var)
  expect_identical(m$parameters, setNames(list(), character()))
  expect_identical(m$state_dict(), setNames(list(), character()))
})

test_that("train() and eval() switch modes; eval uses the running statistics", {
  set.seed(4)
  m <- nn_batch_norm1d(3)
  x <- matrix(rnorm(30, 5, 2), 10, 3)
  expect_identical(m$eval(), m)
  expect_false(m$training)
  y <- m(x)  # running mean 0, var 1: (x - 0) / sqrt(1 + eps)
  expect_equal(y, x / sqrt(1 + 1e-5), tolerance = 1e-15)
  expect_identical(m$num_batches_tracked, 0)
  m$train()
  expect_true(m$training)
  m$train(FALSE)
  expect_false(m$training)
  m$training <- TRUE
  expect_true(m$training)
  m(x)
  expect_identical(m$num_batches_tracked, 1)
  # without running statistics, eval mode uses batch statistics
  m <- nn_batch_norm1d(3, track_running_stats = FALSE)
  m$eval()
  expect_equal(channel_mean(m(x)), rep(0, 3), tolerance = 1e-12)
})

test_that("forward() equals calling the module; integer input is converted", {
  set.seed(5)
  x <- matrix(rnorm(12), 4, 3)
  expect_identical(nn_batch_norm1d(3)$forward(x), nn_batch_norm1d(3)(x))
  xi <- matrix(c(1L, 4L, 2L, 8L, 5L, 7L), 2, 3)
  expect_identical(nn_batch_norm1d(3)(xi), nn_batch_norm1d(3)(xi + 0))
  dimnames(x) <- list(NULL, c("a", "b", "c"))
  expect_identical(dimnames(nn_batch_norm1d(3)(x)), dimnames(x))
})

test_that("parameters can be set; a wrong shape is an error that changes nothing", {
  set.seed(6)
  m <- nn_batch_norm1d(3)
  m$weight <- c(1, 2, 3)
  m$bias <- c(0.5, 0, -0.5)
  expect_identical(m$weight, c(1, 2, 3))
  x <- matrix(rnorm(12), 4, 3)
  y <- m(x)
  v <- channel_var(x)
  expected <- sweep(sweep(sweep(x, 2, channel_mean(x)), 2, sqrt(v + 1e-5), "/"),
                    2, c(1, 2, 3), "*")
  expected <- sweep(expected, 2, c(0.5, 0, -0.5), "+")
  expect_equal(y, expected, tolerance = 1e-12)
  expect_error(m$weight <- c(1, 2), "size or dtype mismatch for weight")
  expect_identical(m$weight, c(1, 2, 3))
  m[["running_var"]] <- c(2, 2, 2)
  expect_identical(m$running_var, c(2, 2, 2))
  m$num_batches_tracked <- 7
  expect_identical(m$num_batches_tracked, 7)
  expect_error(m$num_batches_tracked <- 1.5, "whole numbers")
  expect_error(m$eps <- 1, "cannot set 'eps'")
  m2 <- nn_batch_norm1d(3, affine = FALSE)
  expect_error(m2$weight <- c(1, 2, 3), "Unexpected key\\(s\\) in state_dict: \"weight\"")
})

test_that("reset_parameters() and reset_running_stats()", {
  m <- nn_batch_norm1d(2)
  m$weight <- c(3, 4)
  m$bias <- c(1, 1)
  m(matrix(c(1, 2, 3, 5, 7, 11), 3, 2))
  expect_identical(m$num_batches_tracked, 1)
  m$reset_running_stats()
  expect_identical(m$running_mean, c(0, 0))
  expect_identical(m$running_var, c(1, 1))
  expect_identical(m$num_batches_tracked, 0)
  expect_identical(m$weight, c(3, 4))
  m(matrix(c(1, 2, 3, 5, 7, 11), 3, 2))
  m$reset_parameters()
  expect_identical(m$weight, c(1, 1))
  expect_identical(m$bias, c(0, 0))
  expect_identical(m$running_mean, c(0, 0))
  expect_identical(m$num_batches_tracked, 0)
})

test_that("backward() gives torch's gradients (checked against finite differences)", {
  set.seed(7)
  x <- array(rnorm(3 * 2 * 4), c(3, 2, 4))
  go <- array(rnorm(3 * 2 * 4), c(3, 2, 4))
  m <- nn_batch_norm1d(2)
  m$weight <- c(1.5, 0.5)
  m$bias <- c(0.1, -0.2)
  m(x)
  g <- m$backward(go)
  expect_identical(dim(g$input), dim(x))
  # loss = sum(y * go); y from fresh training-mode modules with the same parameters
  loss <- function(x, w = c(1.5, 0.5), b = c(0.1, -0.2)) {
    mm <- nn_batch_norm1d(2)
    mm$weight <- w
    mm$bias <- b
    sum(mm(x) * go)
  }
  h <- 1e-6
  num <- x
  for (i in seq_along(x)) {
    xp <- x; xp[i] <- xp[i] + h
    xm <- x; xm[i] <- xm[i] - h
    num[i] <- (loss(xp) - loss(xm)) / (2 * h)
  }
  expect_equal(g$input, num, tolerance = 1e-6)
  gw <- sapply(1:2, function(c) {
    wp <- c(1.5, 0.5); wp[c] <- wp[c] + h
    wm <- c(1.5, 0.5); wm[c] <- wm[c] - h
    (loss(x, wp) - loss(x, wm)) / (2 * h)
  })
  expect_equal(g$weight, gw, tolerance = 1e-6)
  expect_equal(g$bias, apply(go, 2, sum), tolerance = 1e-12)
})

test_that("backward() uses the forward input even if R changed or collected it", {
  set.seed(8)
  x <- matrix(rnorm(20), 5, 4)
  go <- matrix(rnorm(20), 5, 4)
  ref <- nn_batch_norm1d(4)
  ref(x)
  expected <- ref$backward(go)
  for (dtype in c("float64", "float32")) {
    m <- nn_batch_norm1d(4, dtype = dtype)
    x2 <- x + 0
    m(x2)
    x2[1, 1] <- 1000  # copy-on-modify: the module's input is unchanged
    g <- m$backward(go)
    if (dtype == "float64") expect_identical(g, expected)
    else expect_equal(g, expected, tolerance = 1e-5)
    m(matrix(x, 5, 4) + 0)  # a temporary, collected below
    invisible(gc())
    g <- m$backward(go)
    if (dtype == "float64") expect_identical(g, expected)
    else expect_equal(g, expected, tolerance = 1e-5)
  }
  expect_null(nn_batch_norm1d(4, affine = FALSE)$weight)
  m <- nn_batch_norm1d(4, affine = FALSE)
  m(x)
  g <- m$backward(go)
  expect_null(g$weight)
  expect_null(g$bias)
  expect_identical(names(g), c("input", "weight", "bias"))
})

test_that("state_dict() has torch's keys and order; load_state_dict() is strict", {
  set.seed(9)
  m <- nn_batch_norm1d(3)
  m(matrix(rnorm(12), 4, 3))
  s <- m$state_dict()
  expect_identical(names(s), c("weight", "bias", "running_mean", "running_var",
                               "num_batches_tracked"))
  expect_identical(s$num_batches_tracked, 1)
  m2 <- nn_batch_norm1d(3)
  expect_identical(m2$load_state_dict(s), m2)
  expect_identical(m2$state_dict(), s)
  expect_error(m2$load_state_dict(s[-1]), "Missing key\\(s\\) in state_dict: \"weight\"")
  expect_error(m2$load_state_dict(c(s, list(extra = 1))),
               "Unexpected key\\(s\\) in state_dict: \"extra\"")
  expect_error(m2$load_state_dict(list(1, 2)), "named")
  expect_error(m2$load_state_dict("x"), "expected a named list")
  # non-strict: missing and unexpected keys are ignored
  m3 <- nn_batch_norm1d(3)
  m3$load_state_dict(list(bias = c(1, 2, 3), extra = 0), strict = FALSE)
  expect_identical(m3$bias, c(1, 2, 3))
  expect_identical(m3$weight, c(1, 1, 1))
  # cumulative-average modules save the same keys
  expect_identical(names(nn_batch_norm1d(2, momentum = NULL)$state_dict()), names(s))
  expect_identical(names(nn_batch_norm1d(2, affine = FALSE)$state_dict()),
                   c("running_mean", "running_var", "num_batches_tracked"))
  expect_identical(names(nn_batch_norm1d(2, track_running_stats = FALSE)$state_dict()),
                   c("weight", "bias"))
})

test_that("save() and load() round-trip, also through a prefixed whole-model file", {
  set.seed(10)
  for (dtype in c("float64", "float32")) {
    m <- nn_batch_norm1d(4, dtype = dtype)
    m$weight <- runif(4, 0.5, 1.5)
    m$bias <- rnorm(4)
    for (i in 1:3) m(matrix(rnorm(24, 2, 3), 6, 4))
    path <- tempfile(fileext = ".safetensors")
    expect_identical(m$save(path), m)
    m2 <- nn_batch_norm1d(4, dtype = dtype)
    m2$load(path)
    expect_identical(m2$state_dict(), m$state_dict())
    x <- matrix(rnorm(12), 3, 4)
    m$eval()
    m2$eval()
    expect_identical(m2(x), m(x))
    # a safetensors file written from R with another layer and a prefix
    f <- bn1d_read_safetensors(path)
    expect_identical(f, structure(m$state_dict(), metadata = setNames(character(), character())))
    whole <- c(setNames(f, paste0("layer1.", names(f))), list(other = matrix(1:6, 2, 3)))
    path2 <- tempfile(fileext = ".safetensors")
    bn1d_write_safetensors(whole, path2, dtype = dtype, metadata = c(note = "from R"))
    m3 <- nn_batch_norm1d(4, dtype = dtype)
    m3$load(path2, prefix = "layer1.")
    expect_identical(m3$state_dict(), m$state_dict())
    back <- bn1d_read_safetensors(path2)
    expect_identical(attr(back, "metadata"), c(note = "from R"))
    expect_identical(back$other, matrix(c(1, 2, 3, 4, 5, 6), 2, 3))
    expect_identical(names(bn1d_read_safetensors(path2, prefix = "layer1.")),
                     paste0("layer1.", names(f)))
    expect_error(nn_batch_norm1d(5, dtype = dtype)$load(path), "size or dtype mismatch")
    # a float32 file does not load into a float64 module, and vice versa
    other <- if (dtype == "float64") "float32" else "float64"
    expect_error(nn_batch_norm1d(4, dtype = other)$load(path), "size or dtype mismatch")
    unlink(c(path, path2))
  }
  expect_error(nn_batch_norm1d(2)$load(tempfile()), class = "error")
})

test_that("dtype = 'float32' rounds inputs to float32 like torch's x$float()", {
  set.seed(11)
  x <- matrix(rnorm(40, 1, 2), 10, 4)
  m32 <- nn_batch_norm1d(4, dtype = "float32")
  m64 <- nn_batch_norm1d(4)
  y32 <- m32(x)
  expect_identical(m32$dtype, "float32")
  expect_equal(y32, m64(x), tolerance = 1e-6)
  # results are float32 values widened to double
  expect_identical(y32, round_f32(y32))
  expect_identical(m32$running_var, round_f32(m32$running_var))
})

test_that("print() shows the C++ repr, parameter count, parameters and buffers", {
  m <- nn_batch_norm1d(100)
  expect_output(print(m), "An `nn_module` containing 200 parameters.", fixed = TRUE)
  expect_output(print(m),
    "BatchNorm1d(100, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)",
    fixed = TRUE)
  expect_output(print(m), "* weight: Double [1:100]", fixed = TRUE)
  expect_output(print(m), "* num_batches_tracked: Long []", fixed = TRUE)
  m <- nn_batch_norm1d(4, momentum = NULL, affine = FALSE, dtype = "float32")
  expect_output(print(m), "containing 0 parameters", fixed = TRUE)
  expect_output(print(m), "momentum=None, affine=false", fixed = TRUE)
  expect_output(print(m), "* running_mean: Float [1:4]", fixed = TRUE)
  capture.output(res <- print(m))
  expect_identical(res, m)
})

# The fused activation (activation = "relu" / "leaky_relu"): outputs and
# gradients against batch norm, ReLU and their derivatives written in plain R
# doubles (training mode over an N x C matrix; eval mode over an N x C x L
# array).

# act(bn(x)) and its gradients for an N x C matrix x in training mode, with
# the gate act'(z) = 1 where z > 0, else 0 (relu) or slope (leaky_relu).
reference_act_bn <- function(x, dy, w, b, activation, slope, eps = 1e-5) {
  mu <- colMeans(x)
  invstd <- 1 / sqrt(channel_var(x) + eps)
  xhat <- sweep(sweep(x, 2, mu), 2, invstd, `*`)
  z <- sweep(sweep(xhat, 2, w, `*`), 2, b, `+`)
  low <- if (activation == "relu") 0 else slope
  y <- ifelse(z > 0, z, low * z)
  g <- dy * ifelse(z > 0, 1, low)
  mean_g <- colMeans(g)
  mean_gx <- colMeans(g * xhat)
  dx <- sweep(g, 2, mean_g) - sweep(xhat, 2, mean_gx, `*`)
  dx <- sweep(dx, 2, w * invstd, `*`)
  list(output = y, input = dx, weight = colSums(g * xhat), bias = colSums(g))
}

for (case in list(list("relu", 0.01), list("leaky_relu", 0.2), list("leaky_relu", -0.5))) {
  activation <- case[[1]]
  slope <- case[[2]]
  test_that(paste("training output and gradients match plain R:", activation, slope), {
    set.seed(7)
    x <- matrix(rnorm(40, 1, 2), 10, 4)
    dy <- matrix(rnorm(40), 10, 4)
    m <- nn_batch_norm1d(4, activation = activation, negative_slope = slope)
    m$weight <- c(0.5, 1, 1.5, 2)
    m$bias <- c(-0.5, 0, 0.25, 1)
    y <- m(x)
    g <- m$backward(dy)
    ref <- reference_act_bn(x, dy, m$weight, m$bias, activation, slope)
    expect_torch_close(y, ref$output, "float64", what = "output")
    expect_torch_close(g$input, ref$input, "float64", what = "grad input")
    expect_torch_close(g$weight, ref$weight, "float64", what = "grad weight")
    expect_torch_close(g$bias, ref$bias, "float64", what = "grad bias")
    expect_identical(m$activation, activation)
    expect_identical(m$negative_slope, slope)
  })
}

test_that("relu output is pmax(bn(x), 0) in eval mode over an N x C x L array", {
  set.seed(8)
  x <- array(rnorm(2 * 3 * 5), c(2, 3, 5))
  m <- nn_batch_norm1d(3, activation = "relu")
  m$running_mean <- c(0.5, -0.5, 0)
  m$running_var <- c(1, 2, 0.5)
  m$eval()
  y <- m(x)
  bn <- sweep(sweep(x, 2, m$running_mean), 2, sqrt(m$running_var + 1e-5), `/`)
  expect_torch_close(y, pmax(bn, 0), "float64", what = "output")
  g <- m$backward(array(1, dim(x)))
  expected <- sweep((bn > 0) * 1, 2, sqrt(m$running_var + 1e-5), `/`)
  expect_torch_close(g$input, expected, "float64", what = "grad input")
})

test_that("at bn(x) == 0 the gradient is 0 for relu and slope * dy for leaky_relu", {
  # Channel values {-1, 0, 1}: mean exactly 0, so bn(x) is exactly 0 where x is.
  x <- matrix(c(-1, 0, 1, 0, 1, -1), 6, 1)
  dy <- matrix(as.double(1:6), 6, 1)
  relu <- nn_batch_norm1d(1, activation = "relu")
  expect_identical(relu(x)[x == 0], c(0, 0))
  expect_identical(relu$backward(dy)$bias, sum(dy[x > 0]))
  leaky <- nn_batch_norm1d(1, activation = "leaky_relu", negative_slope = 0.25)
  leaky(x)
  expect_identical(leaky$backward(dy)$bias, sum(dy[x > 0]) + 0.25 * sum(dy[x <= 0]))
})

test_that("the activation is an option: print, defaults, state and errors", {
  m <- nn_batch_norm1d(2)
  expect_null(m$activation)
  expect_identical(m$negative_slope, 0.01)
  m <- nn_batch_norm1d(2, activation = "leaky_relu", negative_slope = 0.3)
  expect_identical(names(m$state_dict()),
                   c("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))
  expect_error(m$activation <- "relu", "cannot set 'activation'")
  expect_error(nn_batch_norm1d(2, activation = "gelu"),
               'activation: expected NULL, "relu" or "leaky_relu", got "gelu"')
  expect_error(nn_batch_norm1d(2, activation = 1), "activation: expected NULL")
  expect_error(nn_batch_norm1d(2, activation = c("relu", "relu")), "got 2 strings")
  expect_error(nn_batch_norm1d(2, activation = "leaky_relu", negative_slope = NaN),
               "negative_slope")
  expect_error(nn_batch_norm1d(2, activation = "leaky_relu", negative_slope = Inf),
               "negative_slope: expected a finite number")
  path <- tempfile(fileext = ".safetensors")
  m$save(path)
  plain <- nn_batch_norm1d(2)$load(path)  # the file of a module without an activation
  expect_identical(plain$state_dict(), m$state_dict())
})

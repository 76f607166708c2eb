# BF16 and F16 state files written by torch 1.13 (tests/fixtures/state16, made
# by tests/reference/generate.py): read with their values widened to double,
# equal to torch's own widening stored in the same file. Needs BN1D_FIXTURES.

state16_file <- function(name) {
  path <- file.path(fixtures_dir(), "state16", paste0(name, ".safetensors"))
  if (!file.exists(path)) stop("missing fixture ", path)
  path
}

expect_same_values <- function(got, want, what) {
  expect_identical(is.nan(got), is.nan(want), info = what)
  keep <- !is.nan(want)
  expect_identical(got[keep], want[keep], info = what)
  expect_identical(sign(1 / got[keep & got == 0]), sign(1 / want[keep & want == 0]), info = what)
}

for (case in list(list(name = "bn_bfloat16", dtype = "bfloat16", C = 5L,
                       max = (2 - 2^-7) * 2^127, subnormal = 2^-133),
                  list(name = "bn_float16", dtype = "float16", C = 4L,
                       max = 65504, subnormal = 2^-24))) {
  test_that(paste("reads the torch", case$dtype, "state file widened to double"), {
    f <- bn1d_read_safetensors(state16_file(case$name))
    expect_identical(attr(f, "metadata")[["dtype"]], case$dtype)
    for (key in c("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "special")) {
      expect_true(is.double(f[[key]]), info = key)
      expect_same_values(f[[key]], f[[paste0("expected.", key)]], key)
    }
    expect_length(f[["bn.weight"]], case$C)
    expect_identical(f[["bn.num_batches_tracked"]], 3)
    special <- f[["special"]]
    expect_identical(special[1:4], c(0, 0, Inf, -Inf))
    expect_identical(1 / special[2], -Inf)
    expect_true(is.nan(special[5]))
    expect_identical(special[6:7], c(case$max, -case$max))
    expect_identical(special[9], case$subnormal)
  })

  test_that(paste("a", case$dtype, "state is a dtype mismatch for a module"), {
    m <- nn_batch_norm1d(case$C)
    expect_error(m$load(state16_file(case$name), prefix = "bn."),
                 paste("dtype mismatch for weight: copying a", case$dtype, "tensor"))
    expect_identical(m$weight, rep(1, case$C))
  })
}

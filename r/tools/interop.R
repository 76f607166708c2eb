# State-file interchange between the R package and the C++ API, used by scripts/test-r.sh
# (not part of the R package: excluded by .Rbuildignore).
#   Rscript interop.R write <state> <data> <float32|float64>
#       trains an R module, saves its state to <state>, writes an eval-mode input and R's output
#       (keys "input", "output") and the module's options (metadata) to <data>, for C++ to check.
#   Rscript interop.R check <state> <data>
#       loads a state written by C++ into an R module of <data>'s options and compares R's
#       eval output on <data>'s "input" with C++'s "output": stops unless identical.
library(bn1d)
args <- commandArgs(trailingOnly = TRUE)

module_from <- function(meta) {
  nn_batch_norm1d(as.numeric(meta[["num_features"]]), eps = as.numeric(meta[["eps"]]),
                  momentum = if (meta[["momentum"]] == "None") NULL else as.numeric(meta[["momentum"]]),
                  affine = meta[["affine"]] == "true",
                  track_running_stats = meta[["track_running_stats"]] == "true",
                  dtype = meta[["dtype"]])
}

if (length(args) == 4 && args[1] == "write") {
  dtype <- args[4]
  set.seed(42)
  meta <- c(num_features = "5", eps = "1e-05", momentum = "None", affine = "true",
            track_running_stats = "true", dtype = dtype)
  m <- module_from(meta)
  m$weight <- runif(5, 0.5, 1.5)
  m$bias <- rnorm(5)
  for (i in 1:4) m(array(rnorm(7 * 5 * 3, 2, 3), c(7, 5, 3)))
  m$save(args[2])
  m$eval()
  x <- array(rnorm(4 * 5 * 3, 2, 3), c(4, 5, 3))
  # For float32, the file stores x rounded to float32 exactly as the module rounded it.
  bn1d_write_safetensors(list(input = x, output = m(x)), args[3], dtype = dtype,
                         metadata = meta)
  cat(sprintf("R wrote %s and %s (%s)\n", args[2], args[3], dtype))
} else if (length(args) == 3 && args[1] == "check") {
  data <- bn1d_read_safetensors(args[3])
  m <- module_from(attr(data, "metadata"))
  m$load(args[2])
  m$eval()
  y <- m(data$input)
  n <- sum(y != data$output)
  cat(sprintf("R loaded the state %s: eval output %s the writer's (%d of %d elements differ)\n",
              args[2], if (n == 0) "identical to" else "DIFFERS from", n, length(y)))
  if (n != 0) quit(status = 1)
} else {
  stop("usage: interop.R write <state> <data> <dtype> | check <state> <data>")
}

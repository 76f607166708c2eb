library(testthat)
library(bn1d)

test_check("bn1d")

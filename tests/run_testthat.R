# Runs every testthat file against the installed package (.Rlib) and ends with
# one summary line; exits non-zero on any failure or error.
suppressPackageStartupMessages({
  library(testthat)
  library(deepnomo)
})
res <- testthat::test_dir("tests/testthat", package = "deepnomo", load_package = "installed",
                          reporter = testthat::ProgressReporter$new(show_praise = FALSE),
                          stop_on_failure = FALSE)
df <- as.data.frame(res)
failed <- sum(df$failed) + sum(df$error)
cat(sprintf("testthat: %d passed, %d failed, %d skipped\n", sum(df$passed), failed, sum(df$skipped)))
quit(status = if (failed > 0) 1L else 0L)

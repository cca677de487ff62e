# Where the shared reference cases live. `make test` sets DEEPNOMO_SHARED; under
# R CMD check (no repository around) tests that need them are skipped.
shared_dir <- function() {
  dir <- Sys.getenv("DEEPNOMO_SHARED", "")
  if (!nzchar(dir)) testthat::skip("DEEPNOMO_SHARED not set (reference cases unavailable)")
  if (!dir.exists(dir)) stop("DEEPNOMO_SHARED points to a missing folder: ", dir)
  dir
}

reference_cases <- function(estimator) {
  dir <- file.path(shared_dir(), "reference", "cases", estimator)
  files <- list.files(dir, pattern = "\\.json$", full.names = TRUE)
  if (length(files) == 0L) stop("no reference cases in ", dir)
  lapply(files, function(f) {
    case <- jsonlite::fromJSON(f, simplifyVector = TRUE)
    case$data <- utils::read.csv(file.path(shared_dir(), "reference", case$input_csv))
    case
  })
}

# Relative closeness with a floor for values at zero.
expect_rel <- function(object, expected, tol, label = NULL) {
  testthat::expect_equal(as.numeric(object), as.numeric(expected), tolerance = tol, label = label)
}

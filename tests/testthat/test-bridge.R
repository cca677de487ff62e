manifest <- list(
  study = "toy",
  endpoints = list(os = list(description = "overall survival")),
  covariates = list(age = list(type = "numeric"), male = list(type = "binary"),
                    stage = list(type = "ordered", levels = list("I", "II", "III")))
)

toy <- function() {
  data.frame(patient_id = c("p1", "p2", "p3", "p4"),
             cohort = c("train", "train", "internal_test", "internal_test"),
             os_time = c(12.5, 30, 7.25, 60), os_event = c(1L, 0L, 1L, 0L),
             age = c(50, 61, NA, 44), male = c(1L, 0L, 1L, 1L),
             stage = c("I", "III", "II", NA), sig_dl_t1 = c(0.3, -1.2, 2, NA),
             stringsAsFactors = FALSE)
}

test_that("a valid table passes and its column roles are found", {
  roles <- validate_cohort(toy(), manifest)
  expect_equal(roles$endpoints, "os")
  expect_equal(roles$signatures, "sig_dl_t1")
  expect_equal(roles$covariates, c("age", "male", "stage"))
})

test_that("each broken rule is refused naming the column and the rows", {
  d <- toy(); d$patient_id[3] <- "p2"
  expect_error(validate_cohort(d, manifest), "column 'patient_id'.*rows 2 \\(p2\\), 3 \\(p2\\)")
  d <- toy(); d$cohort <- NULL
  expect_error(validate_cohort(d, manifest), "column 'cohort': required column is missing")
  d <- toy(); d$os_event[2] <- 2L
  expect_error(validate_cohort(d, manifest), "column 'os_event'.*rows 2 \\(p2\\)")
  d <- toy(); d$os_time[2] <- -3
  expect_error(validate_cohort(d, manifest), "column 'os_time'.*negative.*rows 2 \\(p2\\)")
  d <- toy(); d$os_time[3] <- NA
  expect_error(validate_cohort(d, manifest), "column 'os_time'.*missing.*rows 3 \\(p3\\)")
  d <- toy(); d$sig_dl_t1 <- letters[1:4]
  expect_error(validate_cohort(d, manifest), "column 'sig_dl_t1'.*numeric")
  d <- toy(); d$stage[2] <- "IV"
  expect_error(validate_cohort(d, manifest), "column 'stage'.*level 'IV'.*rows 2 \\(p2\\)")
  d <- toy(); d$male[3] <- 2L
  expect_error(validate_cohort(d, manifest), "column 'male'.*rows 3 \\(p3\\)")
  d <- toy(); d$os_event <- NULL
  expect_error(validate_cohort(d, manifest), "column 'os_time'.*partner column 'os_event'")
})

test_that("manifests with unknown keys or no endpoints are refused", {
  expect_error(validate_cohort(toy(), c(manifest, colour = "red")), "unknown key")
  expect_error(validate_cohort(toy(), list(covariates = list())), "endpoints")
  m <- manifest; m$endpoints$dfs <- list()
  expect_error(validate_cohort(toy(), m), "column 'dfs_time'")
})

test_that("write_cohort and read_cohort round-trip values, NA and factor levels", {
  dir <- tempfile(); dir.create(dir)
  f <- file.path(dir, "cohort.csv")
  write_cohort(toy(), manifest, f)
  back <- read_cohort(f)
  expect_identical(back$os_time, toy()$os_time)
  expect_type(back$os_event, "integer")
  expect_true(is.ordered(back$stage))
  expect_equal(levels(back$stage), c("I", "II", "III"))
  expect_equal(is.na(back$stage), c(FALSE, FALSE, FALSE, TRUE))
  expect_equal(is.na(back$sig_dl_t1), is.na(toy()$sig_dl_t1))
  expect_error(read_cohort(file.path(dir, "nope.csv")), "cannot read")
})

test_that("a cohort written by Python is read by R with the same values", {
  skip_if_not(nzchar(Sys.getenv("DEEPNOMO_ROOT")), "DEEPNOMO_ROOT not set")
  py <- file.path(Sys.getenv("DEEPNOMO_ROOT"), ".venv", "bin", "python")
  skip_if_not(file.exists(py), "project virtualenv not built")
  dir <- tempfile(); dir.create(dir)
  code <- sprintf(paste(
    "import numpy as np, pandas as pd",
    "from deepnomo.bridge.schema import write_cohort",
    "d = pd.DataFrame({'patient_id': ['a', 'b', 'c'], 'cohort': 'train',",
    "  'os_time': [1/3, 2.5, 1e-3], 'os_event': [1, 0, 1], 'sig_x': [np.nan, 0.1, -7.0]})",
    "write_cohort(d, {'endpoints': {'os': {}}}, '%s/cohort.csv')", sep = "\n"), dir)
  status <- system2(py, c("-c", shQuote(code)))
  expect_equal(status, 0L)
  back <- read_cohort(file.path(dir, "cohort.csv"))
  expect_identical(back$os_time, c(1 / 3, 2.5, 1e-3))
  expect_identical(back$sig_x, c(NA, 0.1, -7))
})

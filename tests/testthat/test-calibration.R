lung_model <- function() {
  d <- survival::lung
  d$os_time <- d$time / 30.44
  d$os_event <- as.integer(d$status == 2)
  d$sex <- factor(d$sex, 1:2, c("male", "female"))
  suppressMessages(select_cox(d, "os", c("age", "sex", "ph.karno"), method = "significant",
                              p_enter = 0.5))
}

test_that("groups, Kaplan-Meier and the D'Agostino-Nam chi-square match a hand computation", {
  sel <- lung_model()
  d <- sel$data
  set.seed(3)
  small <- d[sample(nrow(d), 80), ]
  cal <- calibration_test(sel, small, time = 12, groups = 4, B = 0)
  # by hand
  pred <- rms::survest(sel$fit, newdata = small, times = 12)$surv
  risk <- 1 - pred
  grp <- cut(risk, quantile(risk, 0:4 / 4), include.lowest = TRUE, labels = FALSE)
  chi2 <- 0
  for (g in 1:4) {
    i <- grp == g
    km <- survival::survfit(survival::Surv(small$os_time[i], small$os_event[i]) ~ 1)
    obs <- summary(km, times = 12)$surv
    row <- cal$groups[cal$groups$group == g, ]
    expect_equal(row$n, sum(i))
    expect_equal(row$predicted, mean(pred[i]), tolerance = 1e-10)
    expect_equal(row$observed, obs, tolerance = 1e-12)
    expect_equal(row$events, sum(small$os_event[i] == 1 & small$os_time[i] <= 12))
    p <- 1 - mean(pred[i])
    chi2 <- chi2 + sum(i) * ((1 - obs) - p)^2 / (p * (1 - p))
  }
  expect_equal(cal$test$chi2, chi2, tolerance = 1e-10)
  expect_equal(cal$test$df, 3L)
  expect_equal(cal$test$p_value, pchisq(chi2, 3, lower.tail = FALSE), tolerance = 1e-10)
  expect_null(cal$bootstrap)  # not the training data
  expect_named(as.data.frame(cal), c("group", "n", "events", "predicted", "observed", "lower",
                                     "upper"))
})

test_that("on training data the rms::calibrate bootstrap curve is added, seeded", {
  sel <- lung_model()
  cal <- suppressMessages(calibration_test(sel, sel$data, time = 12, groups = 5, B = 15,
                                           seed = 7))
  expect_s3_class(cal$bootstrap, "data.frame")
  expect_equal(nrow(cal$bootstrap), 5L)
  again <- suppressMessages(calibration_test(sel, sel$data, time = 12, groups = 5, B = 15,
                                             seed = 7))
  expect_identical(cal$bootstrap, again$bootstrap)
  # the uncorrected rms::calibrate KM points are the same groups' KM estimates
  expect_equal(sort(cal$bootstrap$observed), sort(cal$groups$observed), tolerance = 1e-6)
  p <- plot(cal)
  expect_s3_class(p, "ggplot")
  f <- save_figure(p, file.path(tempfile("cal"), "calibration.png"))
  expect_true(all(file.size(f) > 1000))
})

test_that("a group whose patients all die before the time has observed survival 0", {
  sel <- lung_model()
  d <- sel$data
  risk <- 1 - rms::survest(sel$fit, newdata = d, times = 24)$surv
  top <- risk >= quantile(risk, 0.75)
  d$os_event[top] <- 1L
  d$os_time[top] <- pmin(d$os_time[top], 20)
  cal <- calibration_test(sel, d, time = 24, groups = 4, B = 0)
  expect_equal(cal$groups$observed[4], 0)
  p <- 1 - cal$groups$predicted
  expect_equal(cal$test$df, 3L)
  expect_equal(cal$test$chi2, sum(cal$groups$n * ((1 - cal$groups$observed) - p)^2 / (p * (1 - p))))
  # censored before the time: left out with a warning
  d$os_event[top] <- 0L
  expect_warning(cal2 <- calibration_test(sel, d, time = 24, groups = 4, B = 0),
                 "follow-up ends before time 24 in group\\(s\\) 4")
  expect_true(is.na(cal2$groups$observed[4]))
  expect_equal(cal2$test$df, 2L)
})

test_that("bad input is refused", {
  sel <- lung_model()
  expect_error(calibration_test(sel, sel$data, time = 400), "beyond the fit's last time")
  expect_error(calibration_test(sel, sel$data[, c("age", "os_time")], time = 12),
               "lacks column")
  expect_error(calibration_test(lm(1 ~ 1), sel$data, 12), "`fit` must be")
})

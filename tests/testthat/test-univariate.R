lung_os <- function() {
  d <- survival::lung
  d$os_time <- d$time / 30.44
  d$os_event <- as.integer(d$status == 2)
  d$sex <- factor(d$sex, 1:2, c("male", "female"))
  d$ph.ecog <- factor(d$ph.ecog)
  d
}

test_that("numeric and factor rows equal direct coxph fits (lung)", {
  d <- lung_os()
  u <- univariate_cox(d, "os", c("age", "sex", "wt.loss"))
  fit <- survival::coxph(survival::Surv(os_time, os_event) ~ age, data = d)
  ci <- exp(confint(fit))
  expect_equal(u$hr[u$variable == "age"], unname(exp(coef(fit))), tolerance = 1e-10)
  expect_equal(c(u$lower[1], u$upper[1]), unname(ci[1, ]), tolerance = 1e-10)
  expect_equal(u$p_value[1], summary(fit)$coefficients[1, "Pr(>|z|)"], tolerance = 1e-10)
  expect_equal(u$p_variable[1], unname(summary(fit)$logtest["pvalue"]), tolerance = 1e-10)
  fs <- survival::coxph(survival::Surv(os_time, os_event) ~ sex, data = d)
  expect_equal(u$level[u$variable == "sex"], "female")
  expect_equal(u$reference[u$variable == "sex"], "male")
  expect_equal(u$hr[u$variable == "sex"], unname(exp(coef(fs))), tolerance = 1e-10)
  w <- u[u$variable == "wt.loss", ]
  cc <- !is.na(d$wt.loss)
  expect_equal(w$n, sum(cc))
  expect_equal(w$events, sum(d$os_event[cc]))
})

test_that("a multi-level factor gives one row per level against the reference", {
  d <- lung_os()
  d <- d[is.na(d$ph.ecog) | d$ph.ecog != "3", ]
  u <- univariate_cox(d, "os", "ph.ecog")
  fit <- survival::coxph(survival::Surv(os_time, os_event) ~ droplevels(ph.ecog), data = d)
  expect_equal(u$level, c("1", "2"))
  expect_equal(u$hr, unname(exp(coef(fit))), tolerance = 1e-10)
  expect_equal(unique(u$p_variable), unname(summary(fit)$logtest["pvalue"]), tolerance = 1e-10)
})

test_that("bad input: unknown variable, zero-event level, missing endpoint", {
  d <- lung_os()
  expect_error(univariate_cox(d, "os", c("age", "bmi")), "unknown variable.*bmi")
  expect_error(univariate_cox(d, "pfs", "age"), "pfs_time")
  d$grp <- factor(ifelse(d$os_event == 0 & seq_len(nrow(d)) %% 3 == 0, "rare", "common"))
  expect_error(univariate_cox(d, "os", "grp"), "`grp` has level\\(s\\) with zero events: rare")
})

pbc_os <- function() {
  d <- survival::pbc[1:312, ]
  d$os_time <- d$time / 30.44
  d$os_event <- as.integer(d$status == 2)
  d$edema <- factor(d$edema)
  d$sex <- factor(d$sex)
  d$hepato <- factor(d$hepato)
  d
}
cands <- c("age", "sex", "bili", "albumin", "edema", "protime", "copper", "ast", "chol",
           "hepato", "platelet", "trig")
# candidate sets on which the Wald-approximate rms::fastbw agrees with exact stepwise AIC
fastbw_sets <- list(c("age", "sex", "bili", "albumin", "edema", "protime", "copper", "ast",
                      "platelet"),
                    c("age", "sex", "bili", "albumin", "edema", "protime", "chol", "platelet",
                      "alk.phos"))

reference_step <- function(d, vars, direction) {
  d <- d[complete.cases(d[, c("os_time", "os_event", vars)]), ]
  full <- survival::coxph(as.formula(paste("survival::Surv(os_time, os_event) ~",
                                           paste(vars, collapse = " + "))), data = d)
  if (direction == "backward") {
    MASS::stepAIC(full, direction = "backward", trace = 0)
  } else {
    null <- survival::coxph(survival::Surv(os_time, os_event) ~ 1, data = d)
    MASS::stepAIC(null, scope = list(lower = ~1, upper = formula(full)), direction = "both",
                  trace = 0)
  }
}

test_that("backward AIC reproduces MASS::stepAIC and rms::fastbw (pbc)", {
  d <- pbc_os()
  sel <- suppressMessages(select_cox(d, "os", cands, method = "backward", min_epv = 8))
  ref <- reference_step(d, cands, "backward")
  expect_setequal(sel$selected, attr(terms(ref), "term.labels"))
  expect_equal(unname(coef(sel$fit)), unname(coef(ref)), tolerance = 1e-8)
  expect_equal(sel$path$AIC, ref$anova$AIC, tolerance = 1e-8)
  expect_equal(sel$path$variable[-1], sub("^- ", "", trimws(as.character(ref$anova$Step[-1]))))
  expect_equal(nrow(sel$data), 276L)
  # rms::fastbw (approximate, Wald-based AIC) on candidate sets where it agrees
  for (set in fastbw_sets) {
    sel_b <- suppressMessages(select_cox(d, "os", set, method = "backward"))
    full <- rms::cph(as.formula(paste("survival::Surv(os_time, os_event) ~",
                                      paste(set, collapse = " + "))), data = sel_b$data)
    expect_setequal(sel_b$selected, rms::fastbw(full, rule = "aic")$names.kept)
    expect_setequal(sel_b$selected, attr(terms(reference_step(d, set, "backward")), "term.labels"))
  }
  # the cph carries what nomograms and calibration need
  expect_true(inherits(sel$fit, "cph"))
  expect_false(is.null(sel$fit$x))
  expect_true(length(sel$fit$surv) > 0)
})

test_that("hybrid forward/backward AIC from the null model reproduces MASS::stepAIC", {
  d <- pbc_os()
  sel <- suppressMessages(select_cox(d, "os", cands, method = "both", min_epv = 8))
  ref <- reference_step(d, cands, "both")
  expect_setequal(sel$selected, attr(terms(ref), "term.labels"))
  expect_equal(sel$path$AIC, ref$anova$AIC, tolerance = 1e-8)
  expect_equal(sel$path$action[-1], ifelse(substr(trimws(ref$anova$Step[-1]), 1, 1) == "+",
                                           "add", "remove"))
  expect_equal(sel$path$step, seq_len(nrow(sel$path)) - 1L)
})

test_that("significant method: univariate screen then multivariable LRT elimination", {
  d <- pbc_os()
  sel <- suppressMessages(select_cox(d, "os", cands, method = "significant", min_epv = 8))
  dd <- sel$data
  uni_p <- vapply(cands, function(v) {
    f <- survival::coxph(as.formula(paste("survival::Surv(os_time, os_event) ~", v)), data = dd)
    unname(summary(f)$logtest["pvalue"])
  }, numeric(1))
  entered <- cands[uni_p < 0.05]
  expect_setequal(sel$univariate$variable[sel$univariate$p_variable < 0.05], entered)
  expect_true(all(sel$selected %in% entered))
  # every kept variable is significant by LRT in the final model
  final <- survival::coxph(as.formula(paste("survival::Surv(os_time, os_event) ~",
                                            paste(sel$selected, collapse = "+"))), data = dd)
  p_drop <- vapply(sel$selected, function(v) {
    red <- survival::coxph(as.formula(paste("survival::Surv(os_time, os_event) ~",
                                            paste(c("1", setdiff(sel$selected, v)), collapse = "+"))),
                           data = dd)
    pchisq(2 * (final$loglik[2] - red$loglik[length(red$loglik)]),
           length(coef(final)) - length(coef(red)), lower.tail = FALSE)
  }, numeric(1))
  expect_true(all(p_drop < 0.05))
  removed <- sel$path$variable[sel$path$action == "remove"]
  expect_setequal(c(sel$selected, removed), entered)
  expect_true(all(sel$path$p_value[-1] >= 0.05))
})

test_that("bad input: unknown names, zero-event level, collinearity, too few events", {
  d <- pbc_os()
  expect_error(select_cox(d, "os", c("age", "bmi")), "unknown variable.*bmi")
  d$age2 <- 2 * d$age + 1
  expect_error(suppressMessages(select_cox(d, "os", c("age", "bili", "age2"))),
               "collinear candidates: age2")
  d$grp <- factor(ifelse(d$os_event == 0 & seq_len(nrow(d)) %% 4 == 0, "rare", "common"))
  expect_error(suppressMessages(select_cox(d, "os", c("age", "grp"))), "`grp`.*zero events: rare")
  small <- d[1:40, ]  # 27 events for 5 coefficients
  five <- c("age", "bili", "albumin", "protime", "ast")
  expect_warning(suppressMessages(select_cox(small, "os", five)), "5.4 events per variable")
  expect_error(suppressMessages(select_cox(small, "os", five, epv_action = "error")),
               "below `min_epv`")
})

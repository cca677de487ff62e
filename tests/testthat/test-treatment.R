colon_table <- function() {
  d <- survival::colon[survival::colon$etype == 1 & survival::colon$rx != "Lev", ]
  d <- data.frame(patient_id = as.character(d$id), dfs_time = d$time / 30.44, dfs_event = d$status,
                  treatment = droplevels(d$rx), nodes = d$nodes, age = d$age,
                  sex = factor(d$sex, 0:1, c("female", "male")),
                  cohort = ifelse(d$id %% 3 == 0, "test", "train"))
  d[stats::complete.cases(d), ]
}

# Survival at `t` from a coxph fit, by hand: S(t | x) = exp(-H0(t) exp(lp(x))), with the
# centred cumulative baseline hazard and centred linear predictor of the fit.
surv_by_hand <- function(fit, newdata, t) {
  # basehaz() warns that a curve at the covariate means is not useful for interaction models;
  # here it only serves as the centred baseline that the centred linear predictor multiplies.
  h <- suppressWarnings(survival::basehaz(fit, centered = TRUE))
  h0 <- h$hazard[max(which(h$time <= t))]
  exp(-h0 * exp(stats::predict(fit, newdata = newdata, type = "lp", reference = "sample")))
}

test_that("predicted survival under each arm matches the fitted interaction model", {
  d <- colon_table()
  train <- d[d$cohort == "train", ]
  test <- d[d$cohort == "test", ]
  td <- treatment_decision(train, "dfs", "treatment", prognostic = "age", predictive = "nodes",
                           covariates = "sex", time = 60)
  fit <- survival::coxph(survival::Surv(dfs_time, dfs_event) ~ treatment * nodes + age + sex,
                         data = train)
  expect_equal(unname(sort(stats::coef(td$fit))), unname(sort(stats::coef(fit))), tolerance = 1e-8)
  pe <- predict(td, test)
  p <- as.data.frame(pe)
  nd0 <- test
  nd0$treatment <- factor("Obs", levels = levels(train$treatment))
  nd1 <- test
  nd1$treatment <- factor("Lev+5FU", levels = levels(train$treatment))
  s0 <- surv_by_hand(fit, nd0, 60)
  s1 <- surv_by_hand(fit, nd1, 60)
  expect_equal(p$surv_Obs, unname(s0), tolerance = 1e-8)
  expect_equal(p$surv_Lev.5FU, unname(s1), tolerance = 1e-8)
  expect_equal(p$benefit, unname(s1 - s0), tolerance = 1e-8)
  expect_equal(as.character(p$preferred_0.02),
               unname(ifelse(s1 - s0 > 0.02, "Lev+5FU-preferred", "Obs-preferred")))
  # interaction p on training: LRT of the treatment x predictive term
  f0 <- survival::coxph(survival::Surv(dfs_time, dfs_event) ~ treatment + nodes + age + sex, data = train)
  expect_equal(td$interaction$p_lrt,
               stats::pchisq(2 * (fit$loglik[2] - f0$loglik[2]), 1, lower.tail = FALSE), tolerance = 1e-8)
})

test_that("within each preferred group the arms are compared by Cox HR and log-rank", {
  d <- colon_table()
  td <- treatment_decision(d[d$cohort == "train", ], "dfs", "treatment", prognostic = NULL,
                           predictive = "nodes", covariates = c("age", "sex"), time = 60,
                           thresholds = c(0, 0.05))
  test <- d[d$cohort == "test", ]
  pe <- predict(td, test)
  for (i in seq_len(nrow(pe$groups))) {
    g <- pe$groups[i, ]
    keep <- pe$patients[[paste0("preferred_", g$threshold)]] == g$group
    expect_equal(g$n, sum(keep))
    if (g$method == "cox") {
      fit <- survival::coxph(survival::Surv(dfs_time, dfs_event) ~ treatment, data = test[keep, ])
      expect_equal(g$hr, unname(exp(stats::coef(fit))), tolerance = 1e-8)
      sd <- survival::survdiff(survival::Surv(dfs_time, dfs_event) ~ treatment, data = test[keep, ])
      expect_equal(g$logrank_p, stats::pchisq(sd$chisq, 1, lower.tail = FALSE), tolerance = 1e-8)
    }
  }
  km <- plot(pe, threshold = 0, subtitle = "test")
  expect_s3_class(km, "arrangelist")
  expect_length(km, 1L)
  paths <- save_figure(km, file.path(tempfile("tkm"), "km"), width = 8, height = 5)
  expect_true(all(file.size(paths) > 1000))
  benefit <- plot(pe, type = "benefit", subtitle = "test")
  expect_s3_class(benefit, "ggplot")
  expect_equal(benefit$labels$subtitle, "test")
})

test_that("the model is learned once: predictions on a cohort do not depend on other cohorts", {
  d <- colon_table()
  train <- d[d$cohort == "train", ]
  td <- treatment_decision(train, "dfs", "treatment", prognostic = "age", predictive = "nodes")
  test <- d[d$cohort == "test", ]
  a <- predict(td, test)$patients$benefit
  b <- predict(td, rbind(test, train))$patients$benefit[seq_len(nrow(test))]
  expect_equal(a, b)
  # new patients without outcome or treatment can be scored
  newp <- test[1:3, c("nodes", "age")]
  expect_equal(predict(td, newp)$patients$benefit, a[1:3])
})

test_that("chemo_benefit gives the treatment HR within each risk group and dose categories", {
  d <- colon_table()
  d$risk <- factor(ifelse(d$nodes > 3, "high", "low"), c("low", "high"))
  set.seed(3)
  d$dose <- ifelse(d$treatment == "Lev+5FU", round(runif(nrow(d), 100, 220)), NA)
  cb <- chemo_benefit(d, "dfs", risk_group = "risk", treatment = "treatment", dose = "dose")
  tab <- as.data.frame(cb)
  for (lev in c("low", "high")) {
    fit <- survival::coxph(survival::Surv(dfs_time, dfs_event) ~ treatment, data = d[d$risk == lev, ])
    expect_equal(tab$hr[tab$analysis == "treatment" & tab$level == lev], unname(exp(stats::coef(fit))),
                 tolerance = 1e-8)
    tr <- d[d$risk == lev & d$treatment == "Lev+5FU", ]
    tr$hi <- tr$dose > 160
    fit2 <- survival::coxph(survival::Surv(dfs_time, dfs_event) ~ hi, data = tr)
    expect_equal(tab$hr[tab$analysis == "dose" & tab$level == lev], unname(exp(stats::coef(fit2))),
                 tolerance = 1e-8)
  }
})

test_that("treatment_decision refuses bad input", {
  d <- colon_table()
  expect_error(treatment_decision(d, "dfs", "arm", NULL, "nodes"), "`treatment`.*arm")
  expect_error(treatment_decision(d, "dfs", "treatment", NULL, "nodez"), "`predictive`.*nodez")
  d2 <- d
  d2$dfs_event[d2$treatment == "Obs"] <- 0
  expect_error(treatment_decision(d2, "dfs", "treatment", NULL, "nodes"), "no events")
  d3 <- d
  d3$treatment <- factor(sample(c("a", "b", "c"), nrow(d3), TRUE))
  expect_error(treatment_decision(d3, "dfs", "treatment", NULL, "nodes"), "two levels")
  expect_error(treatment_decision(d, "dfs", "treatment", NULL, "nodes", time = -1), "`time`")
})

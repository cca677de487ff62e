# td_auc() / compare_td_auc(): reference values from timeROC 0.4.1, the
# quadratic n x n formulation, and properties of the estimator.

# JSON objects keyed "t=..." (null = NA) as a named numeric vector.
ref_by_time <- function(x, times) {
  v <- vapply(x, function(e) if (is.null(e)) NA_real_ else as.numeric(e), numeric(1))
  unname(v[paste0("t=", times)])
}

ref_matrix_rows <- function(m, times) {
  rows <- m$rows
  rownames(rows) <- m$rownames
  rows[paste0("t=", times), , drop = FALSE]
}

# timeROC prepends t = 0 (AUC NA) when one time is asked; keep the requested times.
ref_times <- function(case) {
  tt <- case$outputs$marker1$times
  auc <- ref_by_time(case$outputs$marker1$AUC, tt)
  tt[!is.na(auc)]
}

simulate_cohort <- function(n, seed, score_ties = FALSE, time_ties = FALSE) {
  set.seed(seed)
  x <- stats::rnorm(n)
  ev_time <- stats::rexp(n, rate = 0.1 * exp(0.7 * x))
  cens_time <- stats::runif(n, 0, 25)
  time <- pmin(ev_time, cens_time)
  if (time_ties) time <- ceiling(time)
  event <- as.integer(ev_time <= cens_time)
  score1 <- x + stats::rnorm(n, sd = 0.8)
  score2 <- x + stats::rnorm(n, sd = 1.5)
  if (score_ties) {
    score1 <- round(score1)
    score2 <- round(score2 * 2) / 2
  }
  data.frame(time = time, event = event, score1 = score1, score2 = score2)
}

test_that("td_auc reproduces timeROC on every reference case", {
  for (case in reference_cases("timeROC")) {
    d <- case$data
    tt <- ref_times(case)
    for (k in 1:2) {
      ref <- case$outputs[[paste0("marker", k)]]
      got <- as.data.frame(td_auc(d[[paste0("score", k)]], d$time, d$event, tt))
      lab <- sprintf("%s marker%d", case$case_id, k)
      expect_equal(got$time, tt, label = lab)
      expect_rel(got$auc, ref_by_time(ref$AUC, tt), 1e-6, label = paste(lab, "auc"))
      expect_rel(got$se, ref_by_time(ref$se, tt), 1e-4, label = paste(lab, "se"))
      expect_rel(got$lower, ref_by_time(ref$ci_unrounded_lower, tt), 1e-4, label = paste(lab, "lower"))
      expect_rel(got$upper, ref_by_time(ref$ci_unrounded_upper, tt), 1e-4, label = paste(lab, "upper"))
      expect_rel(got$surv_prob, ref_by_time(ref$survProb, tt), 1e-6, label = paste(lab, "surv_prob"))
      stats_ref <- ref_matrix_rows(ref$Stats, tt)
      expect_identical(as.numeric(got$cases), as.numeric(stats_ref[, 1]), label = paste(lab, "cases"))
      expect_identical(as.numeric(got$survivors), as.numeric(stats_ref[, 2]), label = paste(lab, "survivors"))
      expect_identical(as.numeric(got$censored), as.numeric(stats_ref[, 3]), label = paste(lab, "censored"))
      # confint() of timeROC: percent scale rounded to 2 decimals
      ci_pct <- ref_matrix_rows(ref$confint_CI_AUC_percent, tt)
      expect_equal(round(100 * got$lower, 2), as.numeric(ci_pct[, 1]), tolerance = 1e-12)
      expect_equal(round(100 * got$upper, 2), as.numeric(ci_pct[, 2]), tolerance = 1e-12)
    }
  }
})

test_that("compare_td_auc reproduces timeROC::compare, unadjusted and adjusted", {
  for (case in reference_cases("timeROC")) {
    d <- case$data
    tt <- ref_times(case)
    got <- as.data.frame(compare_td_auc(d$score1, d$score2, d$time, d$event, tt))
    lab <- case$case_id
    expect_rel(got$auc1, ref_by_time(case$outputs$marker1$AUC, tt), 1e-6, label = paste(lab, "auc1"))
    expect_rel(got$auc2, ref_by_time(case$outputs$marker2$AUC, tt), 1e-6, label = paste(lab, "auc2"))
    expect_rel(got$p_value, ref_by_time(case$outputs$compare_p_values, tt), 1e-4,
               label = paste(lab, "p_value"))
    adj <- case$outputs$compare_adjusted
    if (!is.null(adj$error)) {
      # timeROC cannot adjust with one time (it prepends an NA AUC at t = 0);
      # with one time the simultaneous p-value is the unadjusted one.
      expect_length(tt, 1L)
      expect_equal(got$p_adjusted, got$p_value, tolerance = 1e-14)
    } else {
      p_ref <- adj$p_values$rows
      rownames(p_ref) <- adj$p_values$rownames
      colnames(p_ref) <- adj$p_values$colnames
      expect_rel(got$p_value, p_ref["Non-adjusted", paste0("t=", tt)], 1e-4)
      # reference: randomised quasi-Monte-Carlo (abseps 1e-6); ours: deterministic
      expect_lt(max(abs(got$p_adjusted - p_ref["Adjusted", paste0("t=", tt)])), 1e-5,
                label = paste(lab, "p_adjusted absolute error"))
      cmp <- compare_td_auc(d$score1, d$score2, d$time, d$event, tt)
      expect_rel(cmp$cor, adj$Cor$rows, 1e-6, label = paste(lab, "cor"))
    }
  }
})

test_that("the O(n log n) estimator equals the n x n formulation, with ties in score and time", {
  for (seed in 1:3) {
    d <- simulate_cohort(160, seed, score_ties = TRUE, time_ties = seed != 3)
    tt <- c(2, 5, 9)
    quad <- deepnomo:::td_auc_quadratic(d$score1, d$time, d$event, tt)
    fast <- as.data.frame(td_auc(d$score1, d$time, d$event, tt))
    expect_equal(fast$auc, quad$auc, tolerance = 1e-12)
    expect_equal(fast$se, quad$se, tolerance = 1e-10)
    quad2 <- deepnomo:::td_auc_quadratic(d$score2, d$time, d$event, tt)
    cmp <- as.data.frame(compare_td_auc(d$score1, d$score2, d$time, d$event, tt))
    se_quad <- apply(quad$iid - quad2$iid, 2, stats::sd) / sqrt(nrow(d))
    expect_equal(cmp$se, se_quad, tolerance = 1e-10)
  }
})

test_that("AUC and its SE are invariant to strictly increasing transforms of the score", {
  d <- simulate_cohort(300, 11, score_ties = TRUE)
  tt <- c(3, 8)
  a <- as.data.frame(td_auc(d$score1, d$time, d$event, tt))
  b <- as.data.frame(td_auc(exp(2 * d$score1) + 5, d$time, d$event, tt))
  expect_equal(b$auc, a$auc, tolerance = 1e-12)
  expect_equal(b$se, a$se, tolerance = 1e-10)
})

test_that("AUC(-score) = 1 - AUC(score) without ties, with the same SE", {
  d <- simulate_cohort(300, 12)
  tt <- c(3, 8, 15)
  a <- as.data.frame(td_auc(d$score1, d$time, d$event, tt))
  b <- as.data.frame(td_auc(-d$score1, d$time, d$event, tt))
  expect_equal(b$auc, 1 - a$auc, tolerance = 1e-12)
  expect_equal(b$se, a$se, tolerance = 1e-10)
  expect_equal(a$lower, a$auc - stats::qnorm(0.975) * a$se, tolerance = 1e-14)
})

test_that("AUC does not depend on the row order (nor the SE without tied times)", {
  d <- simulate_cohort(250, 13)
  tt <- c(4, 10)
  perm <- sample.int(nrow(d))
  a <- as.data.frame(td_auc(d$score1, d$time, d$event, tt))
  b <- as.data.frame(td_auc(d$score1[perm], d$time[perm], d$event[perm], tt))
  expect_equal(b$auc, a$auc, tolerance = 1e-12)
  expect_equal(b$se, a$se, tolerance = 1e-10)
})

test_that("without censoring before t the AUC is the Mann-Whitney statistic of cases vs controls", {
  set.seed(14)
  n <- 200
  time <- stats::rexp(n, 0.2)
  event <- rep(1L, n)
  score <- stats::rnorm(n) - time / 5
  t0 <- 4
  cs <- score[time < t0]
  ct <- score[time > t0]
  mw <- mean(outer(cs, ct, function(a, b) (a > b) + 0.5 * (a == b)))
  fit <- as.data.frame(td_auc(score, time, event, t0))
  expect_equal(fit$auc, mw, tolerance = 1e-12)
  expect_equal(fit$surv_prob, mean(time > t0), tolerance = 1e-12)
})

test_that("compare(a, b) mirrors compare(b, a)", {
  d <- simulate_cohort(300, 15, score_ties = TRUE)
  tt <- c(3, 8, 15)
  ab <- as.data.frame(compare_td_auc(d$score1, d$score2, d$time, d$event, tt))
  ba <- as.data.frame(compare_td_auc(d$score2, d$score1, d$time, d$event, tt))
  expect_equal(ba$diff, -ab$diff, tolerance = 1e-14)
  expect_equal(ba$auc1, ab$auc2, tolerance = 1e-14)
  expect_equal(ba$se, ab$se, tolerance = 1e-12)
  expect_equal(ba$p_value, ab$p_value, tolerance = 1e-12)
  expect_equal(ba$p_adjusted, ab$p_adjusted, tolerance = 1e-8)
  expect_true(all(ab$p_adjusted >= ab$p_value))
})

test_that("p_adjusted is the max-|z| simultaneous p-value (checked against simulation)", {
  d <- simulate_cohort(400, 16)
  cmp <- compare_td_auc(d$score1, d$score2, d$time, d$event, c(3, 8, 15))
  set.seed(1)
  zsim <- abs(MASS::mvrnorm(2e5, rep(0, 3), cmp$cor))
  zmax <- apply(zsim, 1, max)
  p_mc <- vapply(abs(cmp$table$z), function(a) mean(zmax >= a), numeric(1))
  expect_lt(max(abs(cmp$table$p_adjusted - p_mc)), 4e-3)
})

test_that("bad input gets an error naming the argument", {
  d <- simulate_cohort(100, 17)
  expect_error(td_auc(d$score1, d$time, d$event, max(d$time) + 1), "`times`.*outside follow-up")
  expect_error(td_auc(d$score1, d$time, d$event, c(0, 5)), "`times` must be positive")
  expect_error(td_auc(d$score1, d$time, d$event, c(5, NA)), "`times`")
  expect_error(td_auc(d$score1, d$time, d$event, c(5, 5)), "`times` must be distinct")
  expect_error(td_auc(d$score1, d$time, d$event), "`times` is missing")
  expect_error(td_auc(rep(1, 100), d$time, d$event, 5), "`score` is constant")
  expect_error(compare_td_auc(d$score1, rep(2, 100), d$time, d$event, 5), "`score2` is constant")
  expect_error(td_auc(d$score1[-1], d$time, d$event, 5), "`score` has length 99")
  expect_error(td_auc(d$score1, d$time, c(1, rep(0, 99)), 5), "at least 2 needed")
  expect_error(td_auc(d$score1, -d$time, d$event, 5), "`time` must be positive")
  ev <- d$event
  ev[3] <- 2
  expect_error(td_auc(d$score1, d$time, ev, 5), "`event` must be 0/1")
  s <- d$score1
  s[c(2, 7)] <- NA
  expect_message(fit <- td_auc(s, d$time, d$event, 5), "dropped 2 row")
  expect_equal(fit$n, 98L)
  expect_equal(as.data.frame(fit)$auc,
               as.data.frame(td_auc(d$score1[-c(2, 7)], d$time[-c(2, 7)], d$event[-c(2, 7)], 5))$auc)
  expect_error(td_auc(s, d$time, d$event, 5, na_action = "fail"), "missing values")
})

test_that("a time with no case or no control gives NA with the reason", {
  d <- simulate_cohort(120, 18)
  first_event <- min(d$time[d$event == 1])
  early <- first_event / 2
  expect_warning(fit <- td_auc(d$score1, d$time, d$event, c(early, 5)), "no cases")
  out <- as.data.frame(fit)
  expect_true(is.na(out$auc[1]) && is.na(out$se[1]))
  expect_false(is.na(out$auc[2]))
  expect_match(attr(out, "reason")[1], "no cases")
  expect_true(is.na(attr(out, "reason")[2]))
  expect_equal(out$cases[1], 0L)
  expect_warning(fit <- td_auc(d$score1, d$time, d$event, max(d$time)), "no controls")
  expect_true(is.na(as.data.frame(fit)$auc))
  expect_warning(cmp <- compare_td_auc(d$score1, d$score2, d$time, d$event, c(early, 5, 10)),
                 "no cases")
  ct <- as.data.frame(cmp)
  expect_true(is.na(ct$p_value[1]) && is.na(ct$p_adjusted[1]))
  # the adjustment runs over the two estimable times
  ref <- as.data.frame(compare_td_auc(d$score1, d$score2, d$time, d$event, c(5, 10)))
  expect_equal(ct$p_adjusted[2:3], ref$p_adjusted, tolerance = 1e-10)
})

test_that("print methods show the table", {
  d <- simulate_cohort(100, 19)
  expect_output(print(td_auc(d$score1, d$time, d$event, c(3, 6))), "cumulative/dynamic")
  expect_output(print(compare_td_auc(d$score1, d$score2, d$time, d$event, c(3, 6))), "p_adjusted")
})

test_that("rank-equivalent scores give NA tests with the reason, not a spurious p-value", {
  d <- simulate_cohort(150, 20)
  expect_warning(cmp <- compare_td_auc(d$score1, 3 * d$score1 + 1, d$time, d$event, c(3, 6)),
                 "zero variance")
  out <- as.data.frame(cmp)
  expect_equal(out$diff, c(0, 0))
  expect_true(all(is.na(out$p_value)) && all(is.na(out$p_adjusted)))
})

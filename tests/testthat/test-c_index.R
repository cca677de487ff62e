pair_counts <- function(...) deepnomo:::concordance_counts(...)

test_that("harrell convention reproduces survival::concordance on every reference case", {
  for (est in c("compareC", "survcomp_concordance")) {
    for (case in reference_cases(est)) {
      d <- case$data
      for (s in c("score1", "score2")) {
        ref <- case$outputs$cross_check_survival_concordance[[s]]
        fit <- c_index(d[[s]], d$time, d$event)
        lab <- paste(case$case_id, s)
        expect_rel(fit$estimate, ref$concordance, 1e-6, label = paste(lab, "estimate"))
        expect_rel(fit$se, ref$std_err, 1e-4, label = paste(lab, "se"))
        expect_equal(c(fit$concordant, fit$discordant, fit$tied_score),
                     unname(unlist(ref$count[c("concordant", "discordant", "tied.x")])),
                     label = paste(lab, "pair counts"))
        expect_equal(fit$n, case$dataset$n)
        expect_equal(fit$events, case$dataset$n_events)
      }
    }
  }
})

test_that("survcomp convention reproduces concordance.index(method = 'noether')", {
  for (case in reference_cases("survcomp_concordance")) {
    d <- case$data
    for (s in c("score1", "score2")) {
      ref <- case$outputs$noether[[s]]
      res <- as.data.frame(c_index(d[[s]], d$time, d$event, convention = "survcomp"))
      lab <- paste(case$case_id, s)
      expect_rel(res$estimate, ref$c_index, 1e-6, label = paste(lab, "c_index"))
      for (f in c("se", "lower", "upper", "p_value")) {
        expect_rel(res[[f]], ref[[f]], 1e-4, label = paste(lab, f))
      }
      expect_equal(res$n, ref$n)
      expect_equal(res$convention, "survcomp")
    }
  }
})

test_that("harrell matches survival::concordance on random data with tied times and scores", {
  set.seed(11)
  for (rep in 1:3) {
    n <- 150
    time <- sample(1:40, n, replace = TRUE)
    event <- rbinom(n, 1, 0.6)
    score <- sample(1:8, n, replace = TRUE) + rep(c(0, 0.5), length.out = n)
    ref <- survival::concordance(survival::Surv(time, event) ~ score, reverse = TRUE)
    fit <- c_index(score, time, event)
    expect_equal(fit$estimate, ref$concordance, tolerance = 1e-12)
    expect_equal(fit$se, sqrt(ref$var), tolerance = 1e-10)
  }
})

test_that("fast pair counts equal the O(n^2) pairwise counts, with ties in time and score", {
  set.seed(3)
  for (tie_rule in c(TRUE, FALSE)) {
    n <- 300
    time <- round(rexp(n, 0.1), 0) + 1
    event <- rbinom(n, 1, 0.4)
    score <- round(rnorm(n), 1)
    fast <- pair_counts(time, event, score, censored_tie_later = tie_rule, engine = "fast")
    slow <- pair_counts(time, event, score, censored_tie_later = tie_rule, engine = "pairwise")
    expect_identical(fast, slow)
    for (conv in c("harrell", "survcomp")) {
      expect_equal(deepnomo:::c_index_fit(score, time, event, conv, engine = "fast"),
                   deepnomo:::c_index_fit(score, time, event, conv, engine = "pairwise"),
                   tolerance = 1e-12)
    }
  }
})

test_that("C is invariant to strictly increasing transforms of the score", {
  set.seed(5)
  n <- 200
  time <- rexp(n) * 20
  event <- rbinom(n, 1, 0.5)
  score <- round(rnorm(n), 1)
  for (conv in c("harrell", "survcomp")) {
    a <- as.data.frame(c_index(score, time, event, convention = conv))
    b <- as.data.frame(c_index(exp(3 * score) + 7, time, event, convention = conv))
    expect_equal(b, a, tolerance = 1e-12)
  }
})

test_that("C(-score) = 1 - C(score) without ties, with the same standard error", {
  set.seed(6)
  n <- 250
  time <- rexp(n) * 10
  event <- rbinom(n, 1, 0.3)
  score <- rnorm(n)
  for (conv in c("harrell", "survcomp")) {
    a <- c_index(score, time, event, convention = conv)
    b <- c_index(-score, time, event, convention = conv)
    expect_equal(b$estimate, 1 - a$estimate, tolerance = 1e-12)
    expect_equal(b$se, a$se, tolerance = 1e-12)
    expect_equal(b$p_value_two_sided, a$p_value_two_sided, tolerance = 1e-10)
  }
})

test_that("bad input gives errors naming the argument, NA rows are dropped or refused", {
  set.seed(7)
  n <- 60
  time <- rexp(n) * 10
  event <- rbinom(n, 1, 0.5)
  score <- rnorm(n)
  score_na <- score
  score_na[c(2, 9)] <- NA
  expect_message(fit <- c_index(score_na, time, event), "dropped 2 row")
  expect_equal(fit$estimate, c_index(score[-c(2, 9)], time[-c(2, 9)], event[-c(2, 9)])$estimate)
  expect_equal(fit$n, n - 2)
  expect_error(c_index(score_na, time, event, na_action = "fail"), "missing values")
  expect_error(c_index(rep(1, n), time, event), "`score` is constant")
  expect_error(c_index(score, time, c(1, rep(0, n - 1))), "1 event")
  expect_error(c_index(score[-1], time, event), "`score` has length")
  expect_error(c_index(score, replace(time, 3, -1), event), "`time` must be positive")
  expect_error(c_index(score, time, replace(event, 4, 2)), "`event` must be 0/1")
  expect_error(c_index(as.character(score), time, event), "`score` must be numeric")
})

test_that("complete separation gives se 0 and NA p-values with a warning", {
  time <- c(2, 4, 5, 7, 9, 11, 12, 15)
  event <- c(1, 1, 0, 1, 1, 0, 1, 1)
  expect_warning(fit <- c_index(-time, time, event), "standard error is 0")
  expect_equal(c(fit$estimate, fit$se), c(1, 0))
  expect_true(is.na(fit$p_value))
})

test_that("print and as.data.frame give the documented fields", {
  d <- survival::lung
  fit <- c_index(d$age, d$time, d$status == 2)
  df <- as.data.frame(fit)
  expect_named(df, c("estimate", "se", "lower", "upper", "p_value", "p_value_two_sided", "n",
                     "events", "convention", "concordant", "discordant", "tied_score"))
  expect_equal(df$lower, df$estimate - stats::qnorm(0.975) * df$se)
  expect_equal(df$p_value, 2 * stats::pnorm(-abs(df$estimate - 0.5) / df$se))
  expect_output(print(fit), "Harrell's C")
})

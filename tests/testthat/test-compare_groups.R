# compare_groups against independent computations by the survival package.

sim_groups <- function(n = 240, k = 3, seed = 5) {
  set.seed(seed)
  levs <- c("low", "mid", "high")[seq_len(k)]
  g <- factor(sample(levs, n, TRUE), levels = levs)
  rate <- c(low = 0.02, mid = 0.035, high = 0.06)[as.character(g)]
  t <- ceiling(rexp(n, rate))                      # integer months: many ties
  cens <- ceiling(runif(n, 10, 90))
  list(g = g, time = pmin(t, cens), event = as.integer(t <= cens))
}

test_that("log-rank equals survdiff and hazard ratios equal coxph", {
  for (k in 2:3) {
    s <- sim_groups(k = k)
    cg <- compare_groups(s$g, s$time, s$event, times = c(12, 36))
    sd <- survival::survdiff(survival::Surv(s$time, s$event) ~ s$g)
    expect_equal(cg$logrank$chisq, sd$chisq, tolerance = 1e-10)
    expect_equal(cg$logrank$df, k - 1L)
    expect_equal(cg$logrank$p_value, stats::pchisq(sd$chisq, k - 1, lower.tail = FALSE), tolerance = 1e-10)
    fit <- survival::coxph(survival::Surv(s$time, s$event) ~ s$g)
    expect_equal(cg$hr$hr, unname(exp(coef(fit))), tolerance = 1e-8)
    expect_equal(cg$hr$lower, unname(exp(confint(fit)[, 1])), tolerance = 1e-8)
    expect_equal(cg$hr$p_value, unname(summary(fit)$coefficients[, 5]), tolerance = 1e-8)
    expect_equal(cg$groups$n, as.vector(table(s$g)))
    expect_equal(cg$groups$events, as.vector(tapply(s$event, s$g, sum)))
  }
})

test_that("Kaplan-Meier curves, survival at times and medians equal survfit", {
  s <- sim_groups()
  cg <- compare_groups(s$g, s$time, s$event, times = c(12, 36))
  sf <- survival::survfit(survival::Surv(s$time, s$event) ~ s$g)
  ss <- summary(sf, censored = TRUE)
  cv <- cg$curves
  expect_equal(cv$time, ss$time)
  expect_equal(cv$surv, ss$surv, tolerance = 1e-12)
  expect_equal(cv$lower, ss$lower, tolerance = 1e-12)
  expect_equal(cv$upper, ss$upper, tolerance = 1e-12)
  expect_equal(cv$n_risk, ss$n.risk)
  expect_equal(cv$n_event, ss$n.event)
  expect_equal(cv$n_censor, ss$n.censor)
  at <- summary(sf, times = c(12, 36))
  tab <- as.data.frame(cg)
  expect_equal(c(rbind(tab$surv_12, tab$surv_36)), at$surv, tolerance = 1e-12)
  expect_equal(c(rbind(tab$surv_12_lower, tab$surv_36_lower)), at$lower, tolerance = 1e-12)
  expect_equal(c(rbind(tab$surv_12_upper, tab$surv_36_upper)), at$upper, tolerance = 1e-12)
  expect_equal(tab$median, unname(summary(sf)$table[, "median"]))
  expect_true(all(c("hr", "hr_lower", "hr_upper", "logrank_p") %in% names(tab)))
  expect_true(is.na(tab$hr[1]))
  # a curve resting exactly at 0.5 and one that never reaches it
  g <- factor(rep(c("a", "b"), each = 4))
  time <- c(1, 2, 3, 4, 1, 2, 3, 4)
  event <- c(1, 1, 1, 1, 0, 1, 0, 0)
  cg2 <- compare_groups(g, time, event, times = 2)
  sf2 <- survival::survfit(survival::Surv(time, event) ~ g)
  expect_equal(cg2$groups$median, unname(summary(sf2)$table[, "median"]))
  expect_true(is.na(cg2$groups$median[2]))
})

test_that("times beyond follow-up give NA with a note; bad input is refused", {
  s <- sim_groups(k = 2)
  cg <- compare_groups(s$g, s$time, s$event, times = c(12, 500))
  expect_true(all(is.na(cg$groups$surv_500)))
  expect_match(cg$notes, "beyond the last follow-up")
  g <- factor(as.character(s$g), levels = c("low", "mid", "high"))
  expect_error(compare_groups(g, s$time, s$event), "no patients in level\\(s\\) high")
  expect_error(compare_groups(factor(rep("a", 10)), 1:10, rep(1, 10)), "at least two groups")
  expect_error(compare_groups(s$g[-1], s$time, s$event), "`group` has length")
  expect_error(compare_groups(as.numeric(s$g), s$time, s$event), "`group` must be a factor")
  expect_error(compare_groups(s$g, s$time, s$event, times = -1), "`times`")
  ev <- s$event
  ev[s$g == "mid"] <- 0L
  expect_silent(cg0 <- compare_groups(s$g, s$time, ev))
  expect_true(all(is.na(cg0$hr$hr)))
  expect_match(cg0$notes, "no events in group\\(s\\) mid", all = FALSE)
  gg <- s$g
  gg[1:2] <- NA
  expect_message(cg <- compare_groups(gg, s$time, s$event), "dropped 2 row")
  expect_equal(sum(cg$groups$n), length(s$g) - 2L)
  expect_error(compare_groups(gg, s$time, s$event, na_action = "fail"), "missing values")
})

test_that("the plot shows the curves and the numbers at risk", {
  s <- sim_groups(k = 2)
  cg <- compare_groups(s$g, s$time, s$event)
  p <- plot(cg, break_by = 24)
  expect_s3_class(p, "ggsurvplot")
  expect_s3_class(p$plot, "ggplot")
  risk <- ggplot2::layer_data(p$table, 1)
  at0 <- p$table$data[p$table$data$time == 0, ]
  expect_equal(at0$n.risk[match(levels(s$g), at0$strata)], as.vector(table(s$g)))
  at24 <- p$table$data[p$table$data$time == 24, ]
  expect_equal(at24$n.risk[match(levels(s$g), at24$strata)],
               vapply(levels(s$g), function(l) sum(s$time[s$g == l] >= 24), numeric(1)),
               ignore_attr = TRUE)
  expect_setequal(as.numeric(risk$label[risk$x == 24]), at24$n.risk)
  # the curves are the object's Kaplan-Meier estimates
  curve <- p$data.survplot
  lev <- levels(s$g)[1]
  mine <- cg$curves[cg$curves$group == lev, ]
  theirs <- curve[curve$group == lev & curve$time > 0, ]
  expect_equal(theirs$surv, mine$surv, tolerance = 1e-12)
  expect_equal(theirs$lower, mine$lower, tolerance = 1e-12)
  stem <- file.path(tempfile("km"), "km")
  paths <- save_figure(p, stem, width = 4, height = 4)
  expect_true(all(file.size(paths) > 1000))
  expect_error(plot(cg, break_by = -1), "`break_by`")
})

# find_cutpoint / risk_groups against survminer::surv_cutpoint and maxstat.

test_that("find_cutpoint reproduces surv_cutpoint and maxstat on every reference case", {
  for (case in reference_cases("surv_cutpoint")) {
    d <- case$data
    cp <- find_cutpoint(d$x, d$time, d$event, minprop = 0.1)
    o <- case$outputs
    id <- case$case_id
    expect_rel(cp$value, o$surv_cutpoint$cutpoint, 1e-6, label = paste(id, "cutpoint"))
    expect_rel(cp$statistic, o$surv_cutpoint$statistic, 1e-6, label = paste(id, "statistic"))
    expect_rel(cp$value, o$maxstat_none$estimate, 1e-6, label = paste(id, "maxstat estimate"))
    expect_rel(cp$scan$cut, o$maxstat_none$cuts, 1e-6, label = paste(id, "cuts"))
    expect_rel(cp$scan$statistic, o$maxstat_none$stats, 1e-6, label = paste(id, "stats"))
    expect_rel(cp$p_value, o$maxstat_Lau92$p_value, 1e-4, label = paste(id, "Lau92 p"))
    expect_equal(cp$n, o$n_complete)
    expect_equal(cp$n_low + cp$n_high, cp$n)
    expect_gte(min(cp$n_low, cp$n_high), floor(0.1 * cp$n))
  }
})

test_that("the scan statistic is the standardised log-rank rank statistic", {
  case <- reference_cases("surv_cutpoint")[[1]]
  d <- case$data
  cp <- find_cutpoint(d$x, d$time, d$event)
  # log-rank scores a_i = delta_i - Nelson-Aalen at t_i, independent of maxstat
  n <- nrow(d)
  r <- rank(d$time, ties.method = "max")
  o <- order(d$time)
  na <- cumsum((d$event / (n - r + 1))[o])[rank(d$time[o], ties.method = "max")]
  a <- d$event - na[match(d$time, d$time[o])]
  stat <- vapply(cp$scan$cut, function(cut) {
    lo <- d$x <= cut
    m <- sum(lo)
    v <- m * (n - m) / (n^2 * (n - 1)) * (n * sum(a^2) - sum(a)^2)
    abs(sum(a[lo]) - m / n * sum(a)) / sqrt(v)
  }, numeric(1))
  expect_equal(cp$scan$statistic, stat, tolerance = 1e-10)
  expect_equal(cp$value, cp$scan$cut[which.max(stat)])
})

test_that("risk_groups applies the locked cutpoint to another cohort", {
  case <- reference_cases("surv_cutpoint")[[2]]
  d <- case$data
  train <- seq_len(nrow(d)) %% 2 == 0
  cp <- find_cutpoint(d$x[train], d$time[train], d$event[train])
  g <- risk_groups(d$x[!train], cp)
  expect_s3_class(g, "factor")
  expect_equal(levels(g), c("low", "high"))
  expect_equal(as.character(g), ifelse(d$x[!train] <= cp$value, "low", "high"))
  expect_message(g2 <- risk_groups(c(cp$value, NA, cp$value + 1), cp), "1 missing")
  expect_equal(as.character(g2), c("low", NA, "high"))
  expect_error(risk_groups(d$x, cp$value), "`cutpoint` must be a `cutpoint` object")
  expect_error(risk_groups(as.character(d$x), cp), "`score` must be numeric")
  tab <- as.data.frame(cp)
  expect_equal(tab$value, cp$value)
})

test_that("bad input to find_cutpoint is refused with the argument named", {
  case <- reference_cases("surv_cutpoint")[[1]]
  d <- case$data
  expect_error(find_cutpoint(rep(1, nrow(d)), d$time, d$event), "`score` is constant")
  expect_error(find_cutpoint(d$x[-1], d$time, d$event), "`score` has length")
  expect_error(find_cutpoint(d$x, d$time, d$event, minprop = 0.7), "`minprop`")
  x <- d$x
  x[1:3] <- NA
  expect_message(cp <- find_cutpoint(x, d$time, d$event), "dropped 3 row")
  expect_equal(cp$n, nrow(d) - 3L)
  expect_error(find_cutpoint(x, d$time, d$event, na_action = "fail"), "missing values")
  expect_error(find_cutpoint(d$x, d$time, rep(0, nrow(d))), "at least 2 needed")
})

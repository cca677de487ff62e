# compareC's estimator written out with full n x n kernel matrices (independent
# of the per-subject reductions used by the package).
kang_by_matrices <- function(time, event, risk1, risk2) {
  n <- length(time)
  a <- matrix(0, n, n)
  for (i in seq_len(n)) for (j in seq_len(n)) {
    if (i == j) next
    a[i, j] <- if (time[i] > time[j]) {
      as.numeric(event[j] == 1)
    } else if (time[i] < time[j]) {
      -as.numeric(event[i] == 1)
    } else {
      (event[j] == 1 && event[i] == 0) - (event[i] == 1 && event[j] == 0)
    }
  }
  b <- sign(outer(-risk1, -risk1, "-"))
  c <- sign(outer(-risk2, -risk2, "-"))
  k_xx <- a * a
  k_xy <- a * b
  k_xz <- a * c
  m <- n * (n - 1)
  ucov <- function(k, l) {
    (4 * sum(rowSums(k) * rowSums(l)) - 2 * sum(k * l) - 2 * (2 * n - 3) * sum(k) * sum(l) / m) /
      (m * (n - 2) * (n - 3))
  }
  t11 <- sum(k_xx) / m
  t12 <- sum(k_xy) / m
  t13 <- sum(k_xz) / m
  g2 <- c(1 / t11, -t12 / t11^2) / 2
  g3 <- c(1 / t11, -t13 / t11^2) / 2
  v1 <- ucov(k_xy, k_xy) * g2[1]^2 + 2 * ucov(k_xy, k_xx) * g2[1] * g2[2] + ucov(k_xx, k_xx) * g2[2]^2
  v2 <- ucov(k_xz, k_xz) * g3[1]^2 + 2 * ucov(k_xz, k_xx) * g3[1] * g3[2] + ucov(k_xx, k_xx) * g3[2]^2
  cv <- ucov(k_xy, k_xz) * g2[1] * g3[1] + ucov(k_xy, k_xx) * g2[1] * g3[2] +
    ucov(k_xx, k_xz) * g2[2] * g3[1] + ucov(k_xx, k_xx) * g2[2] * g3[2]
  c(c1 = (1 + t12 / t11) / 2, c2 = (1 + t13 / t11) / 2, var_c1 = v1, var_c2 = v2, cov = cv)
}

test_that("kang reproduces compareC on every reference case (risk and as-given orientation)", {
  for (case in reference_cases("compareC")) {
    d <- case$data
    for (block in c("risk_scores", "scores_as_given")) {
      ref <- case$outputs[[block]]
      sgn <- if (block == "risk_scores") 1 else -1
      res <- as.data.frame(compare_c_index(sgn * d$score1, sgn * d$score2, d$time, d$event))
      lab <- paste(case$case_id, block)
      expect_rel(res$c1, ref$estC_score1, 1e-6, label = paste(lab, "c1"))
      expect_rel(res$c2, ref$estC_score2, 1e-6, label = paste(lab, "c2"))
      expect_rel(res$diff, ref$est_diff_c, 1e-6, label = paste(lab, "diff"))
      expect_rel(res$se^2, ref$est_vardiff_c, 1e-4, label = paste(lab, "vardiff"))
      expect_rel(res$var_c1, ref$est_varCxy, 1e-4, label = paste(lab, "var_c1"))
      expect_rel(res$var_c2, ref$est_varCxz, 1e-4, label = paste(lab, "var_c2"))
      expect_rel(res$cov, ref$est_cov, 1e-4, label = paste(lab, "cov"))
      expect_rel(res$z, ref$zscore, 1e-6, label = paste(lab, "z"))
      expect_rel(res$p_value, ref$pval, 1e-4, label = paste(lab, "p"))
    }
  }
})

test_that("log_t reproduces survcomp cindex.comp on every reference case", {
  for (case in reference_cases("survcomp_concordance")) {
    d <- case$data
    ref <- case$outputs$cindex_comp
    res <- as.data.frame(compare_c_index(d$score1, d$score2, d$time, d$event, method = "log_t"))
    lab <- case$case_id
    expect_rel(res$c1, ref$cindex1, 1e-6, label = paste(lab, "cindex1"))
    expect_rel(res$c2, ref$cindex2, 1e-6, label = paste(lab, "cindex2"))
    expect_rel(res$r, ref$r_pearson_scores, 1e-6, label = paste(lab, "r"))
    expect_rel(res$p_value, ref$p_value, 1e-4, label = paste(lab, "p"))
    se <- c(case$outputs$noether$score1$se, case$outputs$noether$score2$se)
    expect_rel(res$se^2, se[1]^2 + se[2]^2 - 2 * ref$r_pearson_scores * se[1] * se[2], 1e-4,
               label = paste(lab, "se"))
    expect_equal(res$p_value_two_sided, 2 * min(res$p_value, 1 - res$p_value), tolerance = 1e-10)
  }
})

test_that("kang agrees with the full-matrix computation on random data with ties", {
  set.seed(21)
  for (rep in 1:3) {
    n <- 70
    time <- sample(1:25, n, replace = TRUE)
    event <- rbinom(n, 1, 0.55)
    s1 <- sample(1:6, n, replace = TRUE)
    s2 <- round(s1 + rnorm(n), 0)
    ref <- kang_by_matrices(time, event, s1, s2)
    res <- as.data.frame(compare_c_index(s1, s2, time, event))
    expect_equal(unlist(res[names(ref)]), ref, tolerance = 1e-10)
  }
})

test_that("fast cross sum and comparison equal the O(n^2) pairwise engine", {
  set.seed(4)
  n <- 400
  time <- round(rexp(n, 0.2)) + 1
  event <- rbinom(n, 1, 0.35)
  s1 <- round(rnorm(n), 1)
  s2 <- round(s1 + rnorm(n), 1)
  expect_equal(deepnomo:::concordance_cross(time, event, s1, s2, engine = "fast"),
               deepnomo:::concordance_cross(time, event, s1, s2, engine = "pairwise"))
  for (fit in c("kang_fit", "log_t_fit")) {
    f <- utils::getFromNamespace(fit, "deepnomo")
    expect_equal(f(s1, s2, time, event, engine = "fast"), f(s1, s2, time, event, engine = "pairwise"),
                 tolerance = 1e-12)
  }
})

test_that("compare(a, b) mirrors compare(b, a)", {
  set.seed(8)
  n <- 300
  time <- rexp(n) * 30
  event <- rbinom(n, 1, 0.4)
  a <- rnorm(n)
  b <- a + rnorm(n)
  for (m in c("kang", "log_t")) {
    ab <- compare_c_index(a, b, time, event, method = m)
    ba <- compare_c_index(b, a, time, event, method = m)
    expect_equal(c(ba$c1, ba$c2, ba$diff, ba$z), c(ab$c2, ab$c1, -ab$diff, -ab$z), tolerance = 1e-12)
    expect_equal(c(ba$se, ba$var_c1, ba$var_c2, ba$cov), c(ab$se, ab$var_c2, ab$var_c1, ab$cov),
                 tolerance = 1e-12)
    expect_equal(ba$p_value_two_sided, ab$p_value_two_sided, tolerance = 1e-10)
  }
  expect_equal(compare_c_index(b, a, time, event, method = "log_t")$p_value,
               1 - compare_c_index(a, b, time, event, method = "log_t")$p_value, tolerance = 1e-10)
  k <- compare_c_index(a, b, time, event)
  expect_equal(k$c1, c_index(a, time, event)$estimate, tolerance = 1e-12)
})

test_that("bad input: constant or identical scores, NA, too few events", {
  set.seed(9)
  n <- 50
  time <- rexp(n) * 10
  event <- rbinom(n, 1, 0.5)
  a <- rnorm(n)
  expect_error(compare_c_index(a, rep(2, n), time, event), "`score2` is constant")
  expect_error(compare_c_index(a, a[-1], time, event), "`score2` has length")
  expect_error(compare_c_index(a, -a, time, rep(0, n)), "0 event")
  expect_warning(res <- compare_c_index(a, 2 * a + 1, time, event), "variance of the difference is 0")
  expect_true(is.na(res$p_value))
  b <- a + rnorm(n)
  b[5] <- NA
  expect_message(res <- compare_c_index(a, b, time, event), "dropped 1 row")
  expect_equal(res$n, n - 1)
  expect_error(compare_c_index(a, b, time, event, na_action = "fail"), "na_action")
  expect_output(print(res), "Kang")
})

# Simulated cohorts with known truth: f01, f02, f03 carry the hazard; f04 is a
# near copy of f01 (r ~ 0.98) with no signal of its own; the rest are noise.
simulate_features <- function(n, seed) {
  set.seed(seed)
  x <- matrix(rnorm(n * 20), n, 20, dimnames = list(NULL, sprintf("f%02d", 1:20)))
  x[, "f04"] <- x[, "f01"] + rnorm(n, sd = 0.2)
  lp <- 1.0 * x[, "f01"] - 0.9 * x[, "f02"] + 0.8 * x[, "f03"]
  x <- sweep(sweep(x, 2, seq(1, 4, length.out = 20), "*"), 2, seq(10, 200, length.out = 20), "+")
  t <- rexp(n, 0.02 * exp(lp))
  cens <- runif(n, 20, 120)
  ids <- sprintf("p%03d", seq_len(n) + seed * 1000)
  list(features = data.frame(patient_id = ids, x),
       data = data.frame(patient_id = ids, os_time = pmin(t, cens),
                         os_event = as.integer(t <= cens)))
}

test_that("the signal features are recovered and the correlated copy is filtered", {
  tr <- simulate_features(200, 1)
  sig <- radiomic_signature(tr$features, tr$data, "os", repeats = 3, nfolds = 5)
  kept <- sig$stages$lasso
  expect_true(all(c("f02", "f03") %in% kept))
  expect_equal(sum(c("f01", "f04") %in% sig$stages$correlation), 1L)
  # of the f01/f04 pair the one with the lower univariate p stays
  p <- setNames(sig$univariate$p_value, sig$univariate$feature)
  expect_true(c("f01", "f04")[which.min(p[c("f01", "f04")])] %in% sig$stages$correlation)
  expect_lte(length(setdiff(kept, c("f01", "f02", "f03", "f04"))), 1L)
  # signs follow the truth (higher = higher risk)
  expect_gt(sig$coefficients[["f03"]], 0)
  expect_lt(sig$coefficients[["f02"]], 0)
  # univariate p-values are those of one-feature coxph fits
  fit <- survival::coxph(survival::Surv(os_time, os_event) ~ tr$features$f05, data = tr$data)
  expect_equal(p[["f05"]], summary(fit)$coefficients[1, "Pr(>|z|)"], tolerance = 1e-8)
  # the chosen CV model is the one closest to the mean held-out C
  ok <- sig$cv$n_features > 0
  d <- abs(sig$cv$c_index - mean(sig$cv$c_index[ok]))
  d[!ok] <- Inf
  expect_equal(which(sig$cv$chosen), which.min(d))
  expect_equal(nrow(sig$cv), 9L)
})

test_that("test cohorts are scored with the locked training scaling", {
  tr <- simulate_features(200, 1)
  te <- simulate_features(120, 2)
  sig <- radiomic_signature(tr$features, tr$data, "os", repeats = 2, nfolds = 5)
  f <- names(sig$coefficients)
  expect_equal(sig$center, colMeans(tr$features[f]))
  expect_equal(sig$scale, vapply(tr$features[f], sd, numeric(1)))
  s <- predict(sig, te$features)
  manual <- drop(scale(as.matrix(te$features[f]), center = colMeans(tr$features[f]),
                       scale = vapply(tr$features[f], sd, numeric(1))) %*% sig$coefficients)
  expect_equal(unname(s), unname(manual), tolerance = 1e-12)
  expect_equal(names(s), te$features$patient_id)
  # scoring does not depend on which other patients are scored with it
  expect_equal(predict(sig, te$features[1:5, ]), s[1:5])
  # the signature discriminates on the independent test cohort
  c_test <- survival::concordance(survival::Surv(te$data$os_time, te$data$os_event) ~ s,
                                  reverse = TRUE)$concordance
  expect_gt(c_test, 0.7)
  # same seed, same signature
  again <- radiomic_signature(tr$features, tr$data, "os", repeats = 2, nfolds = 5)
  expect_identical(again$coefficients, sig$coefficients)
})

test_that("the ICC filter drops a feature the readers disagree on", {
  tr <- simulate_features(200, 1)
  r2 <- tr$features
  set.seed(9)
  r2[-1] <- r2[-1] + matrix(rnorm(200 * 20, sd = 0.05), 200, 20)
  r2$f03 <- tr$features$f03 + rnorm(200, sd = 3 * sd(tr$features$f03))
  r2 <- r2[1:60, ]  # the second reader measured a subset
  sig <- radiomic_signature(tr$features, tr$data, "os", reader2 = r2, repeats = 2, nfolds = 5)
  expect_false("f03" %in% sig$stages$icc)
  expect_equal(length(sig$stages$icc), 19L)
  icc <- psych::ICC(cbind(tr$features$f03[1:60], r2$f03), lmer = FALSE)$results
  expect_equal(sig$icc[["f03"]], icc$ICC[icc$type == "ICC2"])
  expect_lt(sig$icc[["f03"]], 0.75)
  expect_gt(min(sig$icc[names(sig$icc) != "f03"]), 0.99)
})

test_that("bad input is refused naming the argument", {
  tr <- simulate_features(60, 1)
  expect_error(radiomic_signature(tr$features[-1, ], tr$data, "os"), "no row in `features`")
  bad <- tr$features
  bad$f05[3] <- NA
  expect_error(radiomic_signature(bad, tr$data, "os"), "missing or infinite.*f05")
  expect_error(radiomic_signature(tr$features, tr$data, "dfs"), "dfs_time")
  sig <- radiomic_signature(simulate_features(200, 1)$features, simulate_features(200, 1)$data,
                            "os", repeats = 1, nfolds = 5)
  expect_error(predict(sig, tr$features[c("patient_id", "f11")]), "lacks feature column")
})

test_that("the vectorised ICC(2,1) equals psych::ICC feature by feature", {
  skip_if_not_installed("psych")
  set.seed(3)
  n <- 37
  truth <- matrix(rnorm(n * 6, sd = rep(c(0.1, 1, 5, 1, 1, 20), each = n)), n)
  a <- truth + matrix(rnorm(n * 6), n)
  b <- truth + matrix(rnorm(n * 6, mean = rep(c(0, 0, 0, 2, -1, 0), each = n)), n)
  b[, 6] <- a[, 6]  # perfect agreement
  colnames(a) <- colnames(b) <- sprintf("g%d", 1:6)
  got <- deepnomo:::icc_agreement(a, b)
  ref <- vapply(1:6, function(j) {
    r <- psych::ICC(cbind(a[, j], b[, j]), lmer = FALSE)$results
    r$ICC[r$type == "ICC2"]
  }, numeric(1))
  expect_equal(unname(got), ref, tolerance = 1e-10)
  expect_equal(names(got), colnames(a))
  expect_equal(got[["g6"]], 1)
  # a reader offset (column 4) lowers absolute agreement below consistency (ICC3)
  r4 <- psych::ICC(cbind(a[, 4], b[, 4]), lmer = FALSE)$results
  expect_lt(got[["g4"]], r4$ICC[r4$type == "ICC3"])
})

test_that("the univariate filter equals one-feature coxph fits, ties included", {
  set.seed(5)
  n <- 80
  z <- matrix(rnorm(n * 4), n, dimnames = list(NULL, sprintf("h%d", 1:4)))
  time <- round(rexp(n, 0.1 * exp(0.7 * z[, 1]))) + 1  # many tied times
  event <- rbinom(n, 1, 0.7)
  y <- survival::Surv(time, event)
  got <- deepnomo:::univariate_cox_wald(z, y)
  ref <- t(vapply(1:4, function(j) {
    s <- summary(survival::coxph(y ~ z[, j]))$coefficients
    c(s[1, "exp(coef)"], s[1, "Pr(>|z|)"])
  }, numeric(2)))
  expect_equal(got$feature, colnames(z))
  expect_equal(got$hr, ref[, 1], tolerance = 1e-12)
  expect_equal(got$p_value, ref[, 2], tolerance = 1e-12)
  expect_lt(got$p_value[1], 0.01)
})

test_that("the signature does not depend on the number of processes", {
  skip_on_os("windows")
  tr <- simulate_features(150, 4)
  one <- radiomic_signature(tr$features, tr$data, "os", repeats = 2, nfolds = 4)
  two <- radiomic_signature(tr$features, tr$data, "os", repeats = 2, nfolds = 4, cores = 2)
  expect_identical(two$cv, one$cv)
  expect_identical(two$coefficients, one$coefficients)
  expect_error(radiomic_signature(tr$features, tr$data, "os", cores = 0), "`cores`")
})

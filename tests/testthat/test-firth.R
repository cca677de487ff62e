# firth_cox against coxphf 1.13.4 reference values and against properties of
# the penalised likelihood.

firth_formula <- function(case) {
  stats::as.formula(sub("^coxphf::coxphf\\((.*?), data = d.*$", "\\1", case$call))
}

# p-values below 1e-10 are compared absolutely (reference README).
expect_pvalue <- function(object, expected, label) {
  small <- expected < 1e-10
  expect_rel(object[!small], expected[!small], 1e-4, label = label)
  expect_true(all(abs(object[small] - expected[small]) < 1e-12), label = label)
}

test_that("firth_cox reproduces coxphf on every reference case (pl = TRUE and FALSE)", {
  for (case in reference_cases("coxphf")) {
    fo <- firth_formula(case)
    for (pl in c(TRUE, FALSE)) {
      ref <- case$outputs[[if (pl) "pl_TRUE" else "pl_FALSE"]]
      fit <- firth_cox(fo, case$data, pl = pl)
      id <- sprintf("%s pl=%s", case$case_id, pl)
      terms <- names(ref$coefficients)
      expect_equal(names(coef(fit)), terms)
      expect_rel(coef(fit), unlist(ref$coefficients), 1e-6, label = paste(id, "coefficients"))
      expect_rel(fit$se, unlist(ref$se), 1e-4, label = paste(id, "se"))
      expect_rel(vcov(fit), ref$var$rows, 1e-4, label = paste(id, "var"))
      tab <- as.data.frame(fit)
      expect_rel(tab$hr_lower, unlist(ref$ci_lower), 1e-4, label = paste(id, "ci_lower"))
      expect_rel(tab$hr_upper, unlist(ref$ci_upper), 1e-4, label = paste(id, "ci_upper"))
      expect_pvalue(tab$p_value, unlist(ref$p_values), label = paste(id, "p"))
      expect_rel(fit$loglik, ref$loglik, 1e-6, label = paste(id, "loglik"))
      expect_equal(fit$iter, ref$iter, label = paste(id, "iterations"))
      if (pl) {
        # profile searches take coxphf's iterations; restricted fits may stop a
        # step or two apart where a step changes the likelihood by rounding error
        expect_equal(unname(fit$iter_ci[, 1:2]), unname(ref$iter_ci$rows[, 1:2]),
                     label = paste(id, "iter_ci"))
        expect_true(all(abs(fit$iter_ci[, 3] - ref$iter_ci$rows[, 3]) <= 3), label = paste(id, "iter_ci p"))
      }
    }
  }
})

test_that("the coefficient table is tidy and consistent across scales", {
  case <- reference_cases("coxphf")[[1]]
  tab <- as.data.frame(firth_cox(firth_formula(case), case$data))
  expect_named(tab, c("term", "estimate", "se", "lower", "upper", "p_value", "hr", "hr_lower", "hr_upper"))
  expect_equal(tab$hr, exp(tab$estimate))
  expect_equal(tab$lower, log(tab$hr_lower))
  expect_true(all(tab$lower < tab$estimate & tab$estimate < tab$upper))
})

test_that("monotone likelihood: coxph diverges, firth_cox stays finite", {
  for (case in reference_cases("coxphf")) {
    ml <- case$outputs$coxph_breslow
    if (is.null(ml$warnings)) next
    fit <- firth_cox(firth_formula(case), case$data, pl = TRUE)
    big <- abs(unlist(ml$coefficients)) > 10
    expect_true(any(big), label = case$case_id)
    expect_true(all(is.finite(coef(fit))) && all(abs(coef(fit)[big]) < 5), label = case$case_id)
    expect_true(all(is.finite(fit$ci[big, ])), label = case$case_id)
  }
  # every event in the exposed group: the ML estimate is +Inf
  d <- data.frame(time = 1:8, event = c(1, 1, 1, 0, 1, 0, 0, 0), x = c(1, 1, 1, 1, 1, 0, 0, 0))
  fit <- firth_cox(survival::Surv(time, event) ~ x, data = d)
  expect_true(is.finite(coef(fit)) && coef(fit) > 0)
  expect_true(fit$ci[1, 2] > fit$ci[1, 1])
})

test_that("Firth estimates approach coxph's as the number of events grows", {
  set.seed(11)
  gap <- vapply(c(40, 160, 640, 2560), function(n) {
    x1 <- rnorm(n)
    x2 <- rbinom(n, 1, 0.4)
    t <- rexp(n, exp(0.7 * x1 - 0.5 * x2))
    d <- data.frame(time = t, event = as.integer(t < stats::quantile(t, 0.6)), x1 = x1, x2 = x2)
    ml <- survival::coxph(survival::Surv(time, event) ~ x1 + x2, data = d, ties = "breslow")
    fr <- firth_cox(survival::Surv(time, event) ~ x1 + x2, data = d, pl = FALSE)
    max(abs(coef(fr) - coef(ml)))
  }, numeric(1))
  expect_true(all(diff(gap) < 0))
  expect_lt(gap[4], 0.01)
})

test_that("factors expand like model.matrix and rescaling a covariate rescales its coefficient", {
  case <- reference_cases("coxphf")[[4]]
  d <- case$data
  d$cell <- factor(ifelse(d$smallcell == 1, "small", ifelse(d$adeno == 1, "adeno",
                   ifelse(d$large == 1, "large", "squamous"))),
                   levels = c("squamous", "small", "adeno", "large"))
  a <- firth_cox(survival::Surv(time, event) ~ trt2 + karno + cell, data = d, pl = FALSE)
  b <- firth_cox(survival::Surv(time, event) ~ trt2 + karno + smallcell + adeno + large, data = d,
                 pl = FALSE)
  expect_equal(names(coef(a)), c("trt2", "karno", "cellsmall", "celladeno", "celllarge"))
  expect_equal(unname(coef(a)), unname(coef(b)), tolerance = 1e-8)
  d$karno10 <- d$karno / 10
  c10 <- firth_cox(survival::Surv(time, event) ~ trt2 + karno10 + cell, data = d)
  c1 <- firth_cox(survival::Surv(time, event) ~ trt2 + karno + cell, data = d)
  expect_equal(unname(coef(c10)["karno10"]), unname(10 * coef(c1)["karno"]), tolerance = 1e-7)
  expect_equal(unname(c10$p_value), unname(c1$p_value), tolerance = 1e-6)
  # interactions
  i <- firth_cox(survival::Surv(time, event) ~ trt2 * karno, data = d, pl = FALSE)
  expect_equal(names(coef(i)), c("trt2", "karno", "trt2:karno"))
})

test_that("bad input is refused with the argument named", {
  case <- reference_cases("coxphf")[[1]]
  d <- case$data
  fo <- firth_formula(case)
  d$T[3] <- NA
  expect_message(fit <- firth_cox(fo, d, pl = FALSE), "dropped 1 row")
  expect_equal(fit$n, nrow(d) - 1L)
  expect_error(firth_cox(fo, d, na_action = "fail"), "missing values")
  expect_error(firth_cox(event ~ N, case$data), "Surv")
  expect_error(firth_cox(fo, as.list(case$data)), "`data`")
  d2 <- case$data
  d2$N <- 1
  expect_error(firth_cox(fo, d2), "N constant")
  d2 <- case$data
  d2$N2 <- 2 * d2$N
  expect_error(firth_cox(survival::Surv(time, event) ~ N + G + N2, d2), "N2 linearly dependent")
  d3 <- case$data
  d3$event <- c(1L, rep(0L, nrow(d3) - 1L))
  expect_error(firth_cox(fo, d3), "at least 2 needed")
  expect_error(firth_cox(fo, case$data, alpha = 2), "`alpha`")
  d4 <- case$data
  d4$time[2] <- -1
  expect_error(firth_cox(fo, d4), "`time` must be positive")
})

pbc_trial <- function() {
  d <- survival::pbc[1:312, ]
  d$trt <- factor(d$trt, 1:2, c("D-penicillamine", "placebo"))
  d$sex <- factor(d$sex)
  d$stage <- factor(d$stage)
  d
}

expected_continuous_p <- function(x, g) {
  ok <- !is.na(x)
  xs <- split(x[ok], droplevels(g[ok]))
  normal <- all(vapply(xs, function(v) shapiro.test(v)$p.value >= 0.05, logical(1)))
  if (length(xs) == 2L) {
    if (normal) t.test(xs[[1]], xs[[2]])$p.value else suppressWarnings(wilcox.test(xs[[1]], xs[[2]])$p.value)
  } else {
    if (normal) oneway.test(x ~ g, var.equal = TRUE)$p.value else kruskal.test(x, g)$p.value
  }
}

test_that("continuous p-values equal the test chosen by Shapiro-Wilk (pbc, two groups)", {
  d <- pbc_trial()
  tab <- baseline_table(d, "trt", c("age", "bili", "chol", "albumin"))
  for (v in c("age", "bili", "chol", "albumin")) {
    row <- tab[tab$variable == v & !is.na(tab$p_value), ]
    expect_equal(row$p_value, expected_continuous_p(d[[v]], d$trt), tolerance = 1e-12)
  }
  expect_equal(tab$test_used[tab$variable == "bili"][1], "Wilcoxon rank-sum")
  # group sizes and the median (range) cell
  expect_equal(tab[tab$variable == "N", "placebo"], "154")
  age_p <- d$age[d$trt == "placebo"]
  expect_equal(tab[tab$variable == "age", "placebo"][1],
               sprintf("%.1f (%.1f-%.1f)", median(age_p), min(age_p), max(age_p)))
})

test_that("normal data take the t-test / ANOVA path, skewed data Kruskal-Wallis", {
  set.seed(42)
  # exact normal quantiles in every group of both groupings, shuffled
  q40 <- qnorm(ppoints(40))
  d <- data.frame(g2 = rep(c("a", "b"), each = 60), g3 = rep(c("a", "b", "c"), each = 40),
                  x = 50 + 10 * c(sample(q40), sample(q40), sample(q40)), y = rexp(120))
  d$x[d$g2 == "b"] <- d$x[d$g2 == "b"] + 4
  t2 <- baseline_table(d, "g2", c("x", "y"), mean_sd = TRUE, continuous = "median_iqr")
  expect_equal(t2$test_used[t2$variable == "x"][1], "Welch t-test")
  expect_equal(t2$p_value[t2$variable == "x"][1], t.test(x ~ g2, data = d)$p.value)
  expect_equal(t2$p_value[t2$variable == "y"][1],
               wilcox.test(y ~ g2, data = d)$p.value)
  xa <- d$x[d$g2 == "a"]
  expect_equal(t2[t2$variable == "x" & t2$level == "mean (SD)", "a"],
               sprintf("%.1f (%.1f)", mean(xa), sd(xa)))
  q <- quantile(xa, c(0.25, 0.75))
  expect_equal(t2[t2$variable == "x" & t2$level == "median (IQR)", "a"],
               sprintf("%.1f (%.1f-%.1f)", median(xa), q[1], q[2]))
  t3 <- baseline_table(d, "g3", c("x", "y"))
  expect_equal(t3$test_used[t3$variable == "x"][1], "ANOVA")
  expect_equal(t3$p_value[t3$variable == "x"][1],
               summary(aov(x ~ g3, data = d))[[1]][["Pr(>F)"]][1], tolerance = 1e-10)
  expect_equal(t3$test_used[t3$variable == "y"][1], "Kruskal-Wallis")
  expect_equal(t3$p_value[t3$variable == "y"][1], kruskal.test(y ~ factor(g3), data = d)$p.value)
})

test_that("categorical: chi-square, Fisher when an expected count < 5, Unknown rows", {
  d <- pbc_trial()
  tab <- baseline_table(d, "trt", c("sex", "stage", "ascites"))
  expect_equal(tab$p_value[tab$variable == "stage"][1], chisq.test(table(d$stage, d$trt))$p.value)
  expect_equal(tab$test_used[tab$variable == "sex"][1], "Chi-square")
  expect_equal(tab$p_value[tab$variable == "sex"][1], chisq.test(table(d$sex, d$trt))$p.value)
  stage1 <- sum(d$stage == "1" & d$trt == "placebo", na.rm = TRUE)
  expect_equal(tab[tab$variable == "stage" & tab$level == "1", "placebo"],
               sprintf("%d (%.1f%%)", stage1, 100 * stage1 / 154))

  lung <- survival::lung
  lung$sex <- factor(lung$sex, 1:2, c("male", "female"))
  lung$ph.ecog <- factor(lung$ph.ecog)
  tl <- baseline_table(lung, "sex", c("ph.ecog", "meal.cal"))
  expect_equal(tl$test_used[tl$variable == "ph.ecog"][1], "Fisher's exact")
  expect_equal(tl$p_value[tl$variable == "ph.ecog"][1],
               fisher.test(table(lung$ph.ecog, lung$sex))$p.value)
  unk <- tl[tl$variable == "ph.ecog" & tl$level == "Unknown", ]
  n_na <- sum(is.na(lung$ph.ecog) & lung$sex == "female")
  expect_equal(unk$female, sprintf("%d (%.1f%%)", n_na, 100 * n_na / sum(lung$sex == "female")))
  unk_cal <- tl[tl$variable == "meal.cal" & tl$level == "Unknown", ]
  expect_equal(as.integer(sub(" .*", "", unk_cal$male)),
               sum(is.na(lung$meal.cal) & lung$sex == "male"))
})

test_that("the table is written as CSV and markdown or HTML", {
  d <- pbc_trial()
  stem <- file.path(withr_tempdir <- tempfile("bt"), "table1")
  tab <- baseline_table(d, "trt", c("age", "sex"), file = stem)
  back <- read.csv(paste0(stem, ".csv"), check.names = FALSE)
  expect_equal(back$p_value, tab$p_value)
  expect_equal(back$placebo, tab$placebo)
  md <- readLines(paste0(stem, ".md"))
  expect_equal(length(md), nrow(tab) + 2L)
  expect_match(md[1], "| variable | level | D-penicillamine | placebo | p_value | test_used |",
               fixed = TRUE)
  baseline_table(d, "trt", c("age"), file = paste0(stem, ".html"))
  expect_true(any(grepl("<td>Wilcoxon rank-sum</td>", readLines(paste0(stem, ".html")))))
  unlink(withr_tempdir, recursive = TRUE)
})

test_that("bad input is refused naming the argument", {
  d <- pbc_trial()
  expect_error(baseline_table(d, "arm", "age"), "`by`")
  expect_error(baseline_table(d, "trt", c("age", "weight")), "unknown variable.*weight")
  d$trt[3] <- NA
  expect_error(baseline_table(d, "trt", "age"), "missing values \\(rows 3\\)")
})

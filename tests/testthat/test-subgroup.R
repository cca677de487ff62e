lung_table <- function() {
  d <- survival::lung
  d$os_time <- d$time
  d$os_event <- d$status - 1
  d$sex <- factor(d$sex, 1:2, c("male", "female"))
  d$older <- factor(ifelse(d$age > 65, "older", "younger"), c("younger", "older"))
  d$group <- factor(ifelse(d$ph.karno < 80, "high", "low"), c("low", "high"))
  d[!is.na(d$group), ]
}

test_that("subgroup HRs equal coxph within each subgroup", {
  d <- lung_table()
  sg <- subgroup_analysis(d, "os", "group", by = c("sex", "older"))
  tab <- as.data.frame(sg)
  expect_equal(nrow(tab), 5L)
  for (i in seq_len(nrow(tab))) {
    keep <- if (tab$variable[i] == "Overall") rep(TRUE, nrow(d)) else d[[tab$variable[i]]] == tab$level[i]
    fit <- survival::coxph(survival::Surv(os_time, os_event) ~ group, data = d[keep, ])
    s <- summary(fit)
    expect_equal(tab$method[i], "cox")
    expect_equal(tab$n[i], sum(keep))
    expect_equal(tab$events[i], sum(d$os_event[keep]))
    expect_equal(tab$hr[i], unname(s$conf.int[1, "exp(coef)"]), tolerance = 1e-10)
    expect_equal(tab$lower[i], unname(s$conf.int[1, "lower .95"]), tolerance = 1e-10)
    expect_equal(tab$upper[i], unname(s$conf.int[1, "upper .95"]), tolerance = 1e-10)
    expect_equal(tab$p_value[i], unname(s$coefficients[1, "Pr(>|z|)"]), tolerance = 1e-10)
  }
})

test_that("interaction p equals the likelihood ratio test of group x subgroup", {
  d <- lung_table()
  sg <- subgroup_analysis(d, "os", "group", by = c("sex", "older"))
  tab <- as.data.frame(sg)
  for (v in c("sex", "older")) {
    dd <- d
    dd$z <- dd[[v]]
    f0 <- survival::coxph(survival::Surv(os_time, os_event) ~ group + z, data = dd)
    f1 <- survival::coxph(survival::Surv(os_time, os_event) ~ group * z, data = dd)
    lrt <- 2 * (f1$loglik[2] - f0$loglik[2])
    p <- stats::pchisq(lrt, 1, lower.tail = FALSE)
    expect_equal(unique(tab$p_interaction[tab$variable == v]), p, tolerance = 1e-10)
  }
})

test_that("a numeric score gives the per-unit HR", {
  d <- lung_table()
  sg <- subgroup_analysis(d, "os", "age", by = "sex")
  fit <- survival::coxph(survival::Surv(os_time, os_event) ~ age, data = d[d$sex == "female", ])
  row <- sg$table[sg$table$level == "female", ]
  expect_equal(row$hr, unname(exp(stats::coef(fit))), tolerance = 1e-10)
})

test_that("Firth's penalized Cox is used under monotone likelihood and few events", {
  d <- lung_table()
  # In the 'female' subgroup, make every high-risk patient censored: no events in one group.
  d$os_event[d$sex == "female" & d$group == "high"] <- 0
  sg <- subgroup_analysis(d, "os", "group", by = "sex", min_events = 5)
  row <- sg$table[sg$table$level == "female", ]
  expect_equal(row$method, "firth")
  ref <- as.data.frame(firth_cox(survival::Surv(os_time, os_event) ~ group,
                                 data = d[d$sex == "female", ], pl = TRUE))
  expect_equal(row$hr, exp(ref$estimate[1]), tolerance = 1e-8)
  expect_equal(row$lower, exp(ref$lower[1]), tolerance = 1e-8)
  expect_true(is.finite(row$hr) && row$hr < 1)
  # fewer events than min_events also switches to Firth
  few <- subgroup_analysis(d, "os", "group", by = "older", min_events = 1000)
  expect_true(all(few$table$method == "firth"))
})

test_that("bad input is refused with the argument named", {
  d <- lung_table()
  expect_error(subgroup_analysis(d, "os", "nope", by = "sex"), "`group`.*nope")
  expect_error(subgroup_analysis(d, "pfs", "group", by = "sex"), "pfs_time")
  expect_error(subgroup_analysis(d, "os", "group", by = "wt.loss"), "wt.loss.*numeric")
  d$three <- factor(sample(c("a", "b", "c"), nrow(d), TRUE))
  expect_error(subgroup_analysis(d, "os", "three", by = "sex"), "two levels")
})

test_that("the forest plot is a ggplot with one row per estimable level", {
  d <- lung_table()
  p <- plot(subgroup_analysis(d, "os", "group", by = c("sex", "older")))
  expect_s3_class(p, "ggplot")
  expect_equal(nrow(p$data), 5L)
})

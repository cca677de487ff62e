test_that("td_roc_curve's AUC reproduces timeROC on every reference case", {
  for (case in reference_cases("timeROC")) {
    d <- case$data
    for (marker in c("marker1", "marker2")) {
      out <- case$outputs[[marker]]
      score <- d[[sub("marker", "score", marker)]]
      for (t in setdiff(out$times, 0)) {
        r <- td_roc_curve(score, d$time, d$event, t)
        expect_rel(r$auc, out$AUC[[paste0("t=", t)]], 1e-6,
                   label = sprintf("%s %s t=%s", case$case_id, marker, t))
      }
    }
  }
})

test_that("the ROC curve runs from (0, 0) to (1, 1) and is monotone", {
  d <- survival::lung
  r <- td_roc_curve(d$age, d$time, d$status - 1, 365)
  expect_equal(unlist(r$curve[1, c("fpr", "tpr")]), c(fpr = 0, tpr = 0))
  expect_equal(unlist(r$curve[nrow(r$curve), c("fpr", "tpr")]), c(fpr = 1, tpr = 1))
  expect_true(all(diff(r$curve$fpr) >= 0) && all(diff(r$curve$tpr) >= 0))
  # C(-score) mirrors: AUC(-score) = 1 - AUC(score)
  expect_equal(td_roc_curve(-d$age, d$time, d$status - 1, 365)$auc, 1 - r$auc, tolerance = 1e-12)
  expect_error(td_roc_curve(d$age, d$time, d$status - 1, 1e6), "control")
})

study_cmp_table <- function() {
  d <- survival::pbc[!is.na(survival::pbc$trt), ]
  data.frame(cohort = ifelse(seq_len(nrow(d)) %% 3 == 0, "test", "train"),
             os_time = d$time / 30.44, os_event = as.integer(d$status == 2),
             bili = log(d$bili), albumin = -d$albumin, age = d$age)
}

test_that("compare_models' C, differences and AUCs equal the estimators on each cohort", {
  d <- study_cmp_table()
  cmp <- compare_models(d, "os", scores = c(Bili = "bili", Alb = "albumin", Age = "age"),
                        reference = "Age", times = c(36, 60))
  tab <- as.data.frame(cmp)
  expect_equal(nrow(tab), 6L)
  for (i in seq_len(nrow(tab))) {
    dd <- d[d$cohort == tab$cohort[i], ]
    col <- c(Bili = "bili", Alb = "albumin", Age = "age")[[tab$model[i]]]
    ci <- as.data.frame(c_index(dd[[col]], dd$os_time, dd$os_event))
    expect_equal(tab$c_index[i], ci$estimate, tolerance = 1e-12)
    expect_equal(tab$c_lower[i], ci$lower, tolerance = 1e-12)
    expect_equal(tab$c_p[i], if (is.null(ci$p_value_two_sided)) ci$p_value else ci$p_value_two_sided,
                 tolerance = 1e-12)
    auc <- as.data.frame(td_auc(dd[[col]], dd$os_time, dd$os_event, times = c(36, 60)))
    expect_equal(c(tab$auc_36[i], tab$auc_60[i]), auc$auc, tolerance = 1e-10)
    if (tab$model[i] == "Age") {
      expect_true(is.na(tab$c_diff[i]))
    } else {
      k <- as.data.frame(compare_c_index(dd[[col]], dd$age, dd$os_time, dd$os_event, method = "kang"))
      expect_equal(tab$c_diff[i], k$diff, tolerance = 1e-12)
      expect_equal(tab$c_p_kang[i], k$p_value, tolerance = 1e-12)
      ca <- as.data.frame(compare_td_auc(dd[[col]], dd$age, dd$os_time, dd$os_event, times = c(36, 60)))
      expect_equal(c(tab$auc_36_diff[i], tab$auc_60_diff[i]), ca$diff, tolerance = 1e-10)
    }
  }
  # the ROC points integrate to the reported AUC
  roc <- cmp$roc[cmp$roc$cohort == "test" & cmp$roc$model == "Bili" & cmp$roc$time == 36, ]
  area <- sum(diff(roc$fpr) * (head(roc$tpr, -1) + tail(roc$tpr, -1)) / 2)
  expect_equal(area, tab$auc_36[tab$cohort == "test" & tab$model == "Bili"], tolerance = 1e-10)
  expect_s3_class(plot(cmp), "ggplot")
})

test_that("compare_models refuses bad input", {
  d <- study_cmp_table()
  expect_error(compare_models(d, "os", c("bili", "age"), reference = "albumin"), "`reference`")
  expect_error(compare_models(d, "os", c("bili", "nope"), reference = "bili"), "`scores`.*nope")
  expect_error(compare_models(d, "os", c("bili", "age"), reference = "bili", cohort = "center"), "center")
  expect_message(compare_models(d, "os", c("bili", "age"), reference = "age", times = c(36, 1000),
                                cohort = NULL), "no cases or no controls")
})

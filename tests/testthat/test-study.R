study_run <- local({
  cache <- NULL
  function() {
    if (is.null(cache)) {
      out <- file.path(tempdir(), "study_small")
      unlink(out, recursive = TRUE)
      d <- simulate_study_table()
      res <- suppressMessages(run_study(d, small_design(), out, preset = "test", seed = 7))
      cache <<- list(out = out, data = d, res = res,
                     json = jsonlite::fromJSON(file.path(out, "results.json"), simplifyVector = FALSE))
    }
    cache
  }
})

test_that("run_study writes every artifact", {
  run <- study_run()
  expect_true(all(file.exists(file.path(run$out, c("results.json", "report.html")))))
  tabs <- c("baseline", "univariate", "selection_path", "multivariable_combined", "model_performance",
            "calibration_test_60", "risk_groups_dfs_test", "risk_groups_os_train", "subgroups_test",
            "treatment_groups_test", "treatment_patients_test")
  expect_true(all(file.exists(file.path(run$out, "tables", paste0(tabs, ".csv")))))
  figs <- c("nomogram", "td_roc", "calibration_train_36", "km_dfs_test", "km_os_test", "subgroups_train",
            "treatment_km_test", "treatment_benefit_train")
  for (ext in c("png", "pdf")) {
    expect_true(all(file.exists(file.path(run$out, "figures", paste0(figs, ".", ext)))))
  }
  j <- run$json
  for (key in c("study", "preset", "seed", "endpoint", "oracle_c", "signatures", "models", "comparisons",
                "cutpoint", "calibration", "timings")) {
    expect_false(is.null(j[[key]]), label = key)
  }
  expect_equal(j$preset, "test")
  expect_equal(j$seed, 7)
  expect_length(j$errors, 0)
  expect_true(is.numeric(j$models$combined$test$c_index))
})

test_that("results.json numbers equal direct computations, with everything learned on train", {
  run <- study_run()
  d <- run$data
  j <- run$json
  train <- d[d$cohort == "train", ]
  fit <- survival::coxph(survival::Surv(dfs_time, dfs_event) ~ age + ebv_dna + sig_dl_a + sig_dl_b,
                         data = train)
  for (co in c("train", "test")) {
    dd <- d[d$cohort == co, ]
    lp <- stats::predict(fit, newdata = dd, type = "lp")
    ci <- c_index(lp, dd$dfs_time, dd$dfs_event)
    expect_equal(j$models$combined[[co]]$c_index, ci$estimate, tolerance = 1e-8)
    expect_equal(j$models$combined[[co]]$ci_lower, ci$lower, tolerance = 1e-8)
    expect_equal(j$models$combined[[co]]$auc_60,
                 as.data.frame(td_auc(lp, dd$dfs_time, dd$dfs_event, times = 60))$auc, tolerance = 1e-8)
    s <- c_index(dd$sig_dl_b, dd$dfs_time, dd$dfs_event)
    expect_equal(j$signatures$sig_dl_b[[co]]$c_index, s$estimate, tolerance = 1e-12)
    expect_equal(j$oracle_c[[co]]$total, c_index(dd$truth_lp, dd$dfs_time, dd$dfs_event)$estimate,
                 tolerance = 1e-12)
    k <- compare_c_index(lp, stats::predict(
      survival::coxph(stats::as.formula(paste("survival::Surv(dfs_time, dfs_event) ~",
                                              paste(unlist(j$selection$selected), collapse = "+"))),
                      data = train), newdata = dd, type = "lp"),
      dd$dfs_time, dd$dfs_event, method = "kang")
    hit <- Filter(function(x) x$model == "combined" && x$cohort == co && x$method == "kang", j$comparisons)
    expect_equal(hit[[1]]$diff, k$diff, tolerance = 1e-8)
  }
  # cutpoint learned on the training scores only, then locked. The rms linear predictor
  # differs from coxph's by a constant (centring); find it from the nomogram check rows.
  cols <- c("age", "ebv_dna", "sig_dl_a", "sig_dl_b", "predict_lp")
  chk <- as.data.frame(do.call(rbind, lapply(j$nomogram$check, function(r) unlist(r[cols]))))
  offset <- mean(stats::predict(fit, newdata = chk, type = "lp") - chk$predict_lp)
  lp_train <- stats::predict(fit, newdata = train, type = "lp")
  cp <- find_cutpoint(lp_train, train$dfs_time, train$dfs_event)
  expect_equal(j$cutpoint$value + offset, cp$value, tolerance = 1e-5)
  test <- d[d$cohort == "test", ]
  grp <- factor(ifelse(stats::predict(fit, newdata = test, type = "lp") > cp$value, "high", "low"),
                c("low", "high"))
  hr <- exp(stats::coef(survival::coxph(survival::Surv(dfs_time, dfs_event) ~ grp, data = test)))
  expect_equal(j$cutpoint$cohorts$test$hr, unname(hr), tolerance = 1e-6)
  # nomogram: the check patients' predictions equal predict() on the model
  for (r in j$nomogram$check) {
    nd <- as.data.frame(r[c("age", "ebv_dna", "sig_dl_a", "sig_dl_b")])
    expect_equal(r$surv_60, unname(surv_at(fit, nd, 60)), tolerance = 1e-4)
  }
})

test_that("report.html is self-contained with every section", {
  run <- study_run()
  html <- paste(readLines(file.path(run$out, "report.html"), warn = FALSE), collapse = "\n")
  for (id in c("baseline", "cox", "performance", "truth", "nomogram", "calibration", "km", "tdroc",
               "subgroups", "treatment")) {
    expect_true(grepl(sprintf('<section id="%s">', id), html, fixed = TRUE), label = id)
  }
  expect_true(grepl('id="nomo-total"', html, fixed = TRUE))
  expect_true(grepl("'nomo-surv-' + t", html, fixed = TRUE))
  expect_true(grepl('<script type="application/json" id="nomo-spec">', html, fixed = TRUE))
  expect_false(grepl("(src|href)=\"https?:", html))
  n_img <- lengths(regmatches(html, gregexpr("<img src=\"data:image/png;base64,", html, fixed = TRUE)))
  expect_equal(n_img, length(run$json$figures))
  index <- file.path(dirname(run$out), "index.html")
  write_index_html(run$out, index)
  idx <- paste(readLines(index), collapse = "\n")
  expect_true(grepl("study_small/report.html", idx, fixed = TRUE))
  expect_true(grepl(sprintf("%.3f", run$json$models$combined$test$c_index), idx, fixed = TRUE))
})

test_that("the interactive nomogram in a headless browser equals R's predictions", {
  browser <- Sys.which(c("chromium", "chromium-browser", "google-chrome"))
  browser <- browser[nzchar(browser)]
  skip_if(length(browser) == 0L, "no Chromium for the browser check")
  run <- study_run()
  page <- normalizePath(file.path(run$out, "report.html"))
  checks <- run$json$nomogram$check
  for (r in checks[c(1L, length(checks))]) {
    inputs <- r[c("age", "ebv_dna", "sig_dl_a", "sig_dl_b")]
    hash <- paste(sprintf("%s=%s", names(inputs), vapply(inputs, function(v) format(v, digits = 17), "")),
                  collapse = "&")
    err <- tempfile()
    dom <- system2(browser[[1]], c("--headless", "--no-sandbox", "--disable-gpu",
                                   "--disable-background-networking", "--enable-logging=stderr", "--v=0",
                                   "--dump-dom",
                                   shQuote(paste0("file://", page, "#", hash))),
                   stdout = TRUE, stderr = err, timeout = 120)
    dom <- paste(dom, collapse = "\n")
    value <- function(id) {
      m <- regmatches(dom, regexpr(sprintf("id=\"%s\" data-value=\"[^\"]*\"", id), dom))
      as.numeric(sub(".*data-value=\"([^\"]*)\"", "\\1", m))
    }
    expect_equal(value("nomo-total"), r$total_points, tolerance = 1e-9)
    expect_equal(value("nomo-surv-36"), r$surv_36, tolerance = 1e-9)
    expect_equal(value("nomo-surv-60"), r$surv_60, tolerance = 1e-9)
    expect_false(any(grepl("Uncaught|SyntaxError", readLines(err, warn = FALSE))))
  }
})

test_that("designs: unknown keys, missing cohorts and signatures give clear errors", {
  d <- simulate_study_table(60, 40)
  des <- small_design()
  expect_error(validate_design(c(des, list(colour = "red"))), "unknown key\\(s\\) \\[colour\\]")
  des2 <- des
  des2$calibration$bins <- 3
  expect_error(validate_design(des2), "design\\$calibration: unknown key\\(s\\) \\[bins\\]")
  des3 <- des
  des3$cohorts$test <- c("test", "external")
  expect_error(suppressMessages(run_study(d, des3, tempfile())), "'external'")
  des4 <- des
  des4$signatures <- c("sig_dl_a", "sig_dl_missing")
  expect_error(suppressMessages(run_study(d, des4, tempfile())), "sig_dl_missing")
  des5 <- des
  des5$analyses <- c("nomogram", "tea")
  expect_error(validate_design(des5), "unknown analyses \\[tea\\]")
})

test_that("the shipped designs validate", {
  files <- list.files(system.file("designs", package = "deepnomo"), pattern = "\\.yaml$", full.names = TRUE)
  expect_setequal(basename(files), paste0(c("multiscale", "t3n1", "stage2", "recurrent", "cptdn"), ".yaml"))
  for (f in files) {
    des <- read_design(f)
    expect_equal(des$study, sub("\\.yaml$", "", basename(f)))
    expect_true(all(grepl("^sig_(dl|rad)_", des$signatures)))
    expect_equal(des$times, c(36, 60))
  }
  expect_true("treatment_decision" %in% read_design(files[basename(files) == "cptdn.yaml"])$analyses)
  expect_true("chemo_benefit" %in% read_design(files[basename(files) == "stage2.yaml"])$analyses)
})

test_that("the same table, design and seed give the same results", {
  d <- simulate_study_table(150, 100, seed = 5)
  des <- small_design()
  des$analyses <- c("selection", "calibration", "cutpoint")
  run <- function() {
    res <- suppressMessages(run_study(d, des, tempfile(), seed = 11))
    res$timings <- NULL
    res
  }
  a <- run()
  expect_identical(a, run())
  expect_false(is.null(a$calibration$train[["60"]]$hl_chi2))
})

test_that("a factor candidate with a level without training events is left out, with the reason", {
  d <- simulate_study_table(200, 100, seed = 7)
  train_ev <- d$cohort == "train" & d$dfs_event == 1
  d$grade <- factor(ifelse(train_ev, "high", sample(c("low", "high"), nrow(d), TRUE)),
                    levels = c("low", "high"))
  expect_equal(sum(d$dfs_event[d$cohort == "train" & d$grade == "low"]), 0)
  des <- small_design()
  des$candidates <- c(des$candidates, "grade")
  des$analyses <- c("univariate", "selection")
  out <- tempfile()
  expect_message(res <- run_study(d, des, out, seed = 1), "grade \\(level low has no training events\\)")
  expect_equal(res$excluded_candidates, list(grade = "level low has no training events"))
  expect_false("grade" %in% res$selection$candidates)
  uni <- utils::read.csv(file.path(out, "tables", "univariate.csv"))
  expect_false("grade" %in% uni$variable)
  # the same design without the sparse factor selects the same model
  des$candidates <- setdiff(des$candidates, "grade")
  expect_equal(suppressMessages(run_study(d, des, tempfile(), seed = 1))$selection$selected,
               res$selection$selected)
})

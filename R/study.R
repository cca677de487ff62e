#' Run one study design end to end
#'
#' Runs a study design (see [read_design()]) on a cohort table and writes,
#' into `out_dir`: `tables/*.csv`, `figures/*.png` and `*.pdf`,
#' `results.json` and a self-contained `report.html` ([study_report()]).
#'
#' Everything learned — median imputation, clinical variable selection, model
#' coefficients, the nomogram, the risk cutpoint and the treatment-decision
#' model — is fitted on the training cohort only and applied, locked, to the
#' test cohorts. Ordered factors are analysed as unordered factors (treatment
#' contrasts against the first level); character covariates become factors.
#' Each model is fitted on the training rows complete for its terms
#' (complete case); a test patient with a missing term gets no score. C-index
#' convention: Harrell's (survival::concordance, tied scores count 1/2).
#'
#' Survival axes of the nomogram and calibration times beyond the follow-up of
#' the training fit (or of a cohort) are left out with a message, and an AUC
#' at a time without cases or controls is `null`.
#'
#' Each stage is timed. A stage that fails is reported by name and the stages
#' that do not depend on it still run; at the end, after `results.json`
#' (with `errors`) and the report are written, `run_study()` stops with an
#' error naming the study and the failed stages.
#'
#' `results.json` holds: `study`, `preset`, `seed`, `endpoint`; `oracle_c`
#' (cohort -> `imaging`, `total`: C of the truth columns, when present);
#' `signatures` (name -> cohort -> `c_index`, `ci_lower`, `ci_upper`);
#' `models` (name -> cohort -> `c_index`, `ci_lower`, `ci_upper`,
#' `p_vs_half`, `auc_<t>`); `comparisons` (list of `model`, `reference`,
#' `cohort`, `method` (`kang`, `log_t`, `td_auc_<t>`), `diff`, `p`);
#' `cutpoint` (`value`, `model`, `statistic`, `cohorts` -> cohort -> `hr`,
#' `hr_lower`, `hr_upper`, `logrank_p`); `calibration` (cohort -> time ->
#' `hl_chi2`, `df`, `p`); `nomogram` ([nomogram_spec()] plus `check`: a few
#' patients' inputs with their points and predicted survival);
#' `selection`, `treatment_decision`, `chemo_benefit`, `subgroups`,
#' `figures`, `tables`, `errors`, `timings` (stage -> seconds). NA is
#' written as `null`.
#'
#' @param table A cohort table (data frame) or the path of a cohort CSV (read
#'   with [read_cohort()], manifest beside it).
#' @param design A design list or YAML path ([read_design()]).
#' @param out_dir Output folder (created).
#' @param manifest Optional manifest (list or path) to validate and type a
#'   data-frame `table` with ([validate_cohort()]).
#' @param preset,seed Recorded in `results.json`; `seed` (default: the
#'   design's) also seeds the calibration bootstrap.
#' @return Invisibly, the results list (as written to `results.json`).
#' @examples
#' \donttest{
#' set.seed(1)
#' n <- 300
#' d <- data.frame(patient_id = sprintf("p%03d", 1:n),
#'                 cohort = rep(c("train", "test"), c(200, 100)),
#'                 age = round(rnorm(n, 50, 10)),
#'                 sex = factor(sample(c("male", "female"), n, TRUE)),
#'                 sig_dl_a = rnorm(n))
#' lp <- 0.03 * (d$age - 50) + 0.8 * d$sig_dl_a
#' t_event <- rexp(n, 0.01 * exp(lp)); t_cens <- runif(n, 20, 120)
#' d$os_time <- pmin(t_event, t_cens); d$os_event <- as.integer(t_event <= t_cens)
#' design <- list(study = "demo", endpoint = "os",
#'                cohorts = list(train = "train", test = "test"),
#'                candidates = c("age", "sex"), signatures = "sig_dl_a",
#'                models = list(clinical = "@selected", combined = c("@selected", "sig_dl_a")),
#'                analyses = c("nomogram", "cutpoint", "km", "td_roc"))
#' res <- run_study(d, design, file.path(tempdir(), "demo"))
#' res$models$combined$test$c_index
#' }
#' @export
run_study <- function(table, design, out_dir, manifest = NULL, preset = NA, seed = NULL) {
  design <- read_design(design)
  if (!is.character(out_dir) || length(out_dir) != 1L) {
    stop("run_study(): `out_dir` must be one folder path", call. = FALSE)
  }
  seed <- as.integer(seed %||% design$seed)
  st <- study_state(design, out_dir)
  st$stage("load", {
    data <- load_study_table(table, manifest)
    st$data <- prepare_study_table(data, design)
  })
  if (!is.null(st$errors$load)) {
    stop(sprintf("run_study(%s): %s", design$study, st$errors$load), call. = FALSE)
  }
  data <- st$data
  ep <- design$endpoint
  is_train <- data$cohort == design$cohorts$train
  train <- data[is_train, , drop = FALSE]
  cohorts <- c(design$cohorts$train, design$cohorts$test)
  res <- list(study = design$study, preset = preset, seed = seed, endpoint = ep,
              secondary_endpoints = design$secondary_endpoints, cohorts = as.list(cohorts),
              n = lapply(stats::setNames(cohorts, cohorts), function(co) sum(data$cohort == co)),
              events = lapply(stats::setNames(cohorts, cohorts),
                              function(co) sum(data[[paste0(ep, "_event")]][data$cohort == co])))
  run <- function(a) a %in% design$analyses
  sparse <- zero_event_factors(train, paste0(ep, "_event"), design$candidates)
  if (length(sparse)) {
    message(sprintf("run_study(%s): candidate(s) left out of univariate analysis and selection, %s",
                    design$study, paste(sprintf("%s (%s)", names(sparse), sparse), collapse = "; ")))
    design$candidates <- setdiff(design$candidates, names(sparse))
    res$excluded_candidates <- as.list(sparse)
  }

  if (run("baseline")) st$stage("baseline", {
    vars <- unique(c(design$candidates, design$signatures))
    bd <- data
    bd$cohort <- factor(paste(bd$cohort, "cohort"), levels = paste(cohorts, "cohort"))
    for (v in vars) {
      x <- bd[[v]]
      if (is.numeric(x) && all(x %in% c(0, 1, NA))) {
        bd[[v]] <- factor(x, levels = 0:1, labels = c("no", "yes"))
      }
    }
    tab <- baseline_table(bd, by = "cohort", vars = vars)
    st$table("baseline", tab)
  })
  if (run("univariate")) st$stage("univariate", {
    st$table("univariate", univariate_cox(train, ep, unique(c(design$candidates, design$signatures))))
  })
  selected <- NULL
  if (run("selection") || uses_token(design, "@selected")) st$stage("selection", {
    sel <- select_cox(train, ep, design$candidates, method = design$selection)
    st$table("selection_path", as.data.frame(sel))
    res$selection <- list(method = design$selection, candidates = design$candidates,
                          selected = sel$selected)
    selected <- sel$selected
  })

  fits <- list()
  st$stage("models", {
    for (m in names(design$models)) {
      fits[[m]] <- fit_study_model(train, ep, expand_terms(design$models[[m]], design, selected))
      st$table(paste0("multivariable_", m), cox_coef_table(fits[[m]]))
    }
    for (m in names(fits)) data[[model_column(m)]] <- model_lp(fits[[m]], data)
    res$model_terms <- lapply(fits, function(f) attr(stats::terms(f), "term.labels"))
  })

  st$stage("performance", {
    need(st, "models")
    scores <- stats::setNames(model_column(names(fits)), names(fits))
    cmp <- compare_models(data, ep, scores, reference = design$reference, times = design$times)
    st$table("model_performance", as.data.frame(cmp))
    res$models <- models_json(cmp, design$times)
    res$comparisons <- comparisons_json(cmp, design$times)
    if (run("td_roc")) st$figure("td_roc", plot(cmp), width = 3 + 2.2 * length(cohorts),
                                 height = 1.5 + 2.4 * length(design$times))
  })

  st$stage("signatures", {
    res$signatures <- list()
    for (s in design$signatures) {
      res$signatures[[s]] <- lapply(stats::setNames(cohorts, cohorts), function(co) {
        d <- data[data$cohort == co, , drop = FALSE]
        ci <- as.data.frame(c_index(d[[s]], d[[paste0(ep, "_time")]], d[[paste0(ep, "_event")]]))
        list(c_index = ci$estimate, ci_lower = ci$lower, ci_upper = ci$upper)
      })
    }
    truth <- truth_columns(data, design)
    if (length(truth)) {
      res$oracle_c <- lapply(stats::setNames(cohorts, cohorts), function(co) {
        d <- data[data$cohort == co, , drop = FALSE]
        lapply(truth, function(col) {
          c_index(d[[col]], d[[paste0(ep, "_time")]], d[[paste0(ep, "_event")]])$estimate
        })
      })
      res$truth_columns <- as.list(truth)
    }
  })

  nomo <- NULL
  if (run("nomogram")) st$stage("nomogram", {
    need(st, "models")
    fit <- fits[[design$nomogram]]
    times <- design$times[design$times < max(fit$y[, 1])]
    if (length(times) < length(design$times)) {
      message(sprintf("[%s] nomogram: time(s) %s beyond the training follow-up are left out", design$study,
                      paste(setdiff(design$times, times), collapse = ", ")))
    }
    if (!length(times)) stop("every design time is beyond the training follow-up", call. = FALSE)
    nomo <- build_nomogram(fit, times = times)
    st$figure("nomogram", nomo, width = 9, height = 2.2 + 0.55 * (length(nomo$predictors) + 3))
    spec <- nomogram_spec(nomo)
    inputs <- vapply(spec$predictors, function(p) p$name, "")
    check_rows <- unlist(lapply(cohorts, function(co) {
      utils::head(which(data$cohort == co & stats::complete.cases(data[inputs])), 3L)
    }))
    sc <- nomogram_score(nomo, data[check_rows, inputs, drop = FALSE])
    base <- unlist(lapply(design$derived, function(d) c(d$indicator, unlist(d$product))))
    base <- intersect(base, names(data))
    check <- data[check_rows, unique(c("patient_id", "cohort", base, inputs)), drop = FALSE]
    for (k in names(sc)) if (k == "total_points" || grepl("^surv_", k)) check[[k]] <- sc[[k]]
    check[[paste0("predict_lp")]] <- stats::predict(fits[[design$nomogram]], check, type = "lp")
    spec$model <- design$nomogram
    spec$derived <- lapply(design$derived, function(d) {
      if (!is.null(d$indicator)) d$levels <- levels(as.factor(data[[d$indicator]]))
      d
    })
    spec$check <- check
    res$nomogram <- spec
  })

  if (run("calibration")) st$stage("calibration", {
    need(st, "models")
    fit <- fits[[design$nomogram]]
    res$calibration <- list()
    vars <- attr(stats::terms(fit), "term.labels")
    for (co in cohorts) {
      d <- data[data$cohort == co, , drop = FALSE]
      d <- d[stats::complete.cases(d[all_vars(vars)]), , drop = FALSE]
      res$calibration[[co]] <- list()
      for (t in design$calibration$times) {
        if (t >= min(max(d[[paste0(ep, "_time")]]), max(fit$y[, 1]))) {
          message(sprintf("[%s] calibration: %s months is beyond the follow-up of cohort '%s' or of the fit",
                          design$study, format_time(t), co))
          next
        }
        cal <- calibration_test(fit, d, time = t, groups = design$calibration$groups,
                                B = if (co == design$cohorts$train) design$calibration$B else 0, seed = seed)
        res$calibration[[co]][[format_time(t)]] <- list(hl_chi2 = cal$test$chi2, df = cal$test$df,
                                                        p = cal$test$p_value)
        st$table(sprintf("calibration_%s_%s", co, format_time(t)), as.data.frame(cal))
        st$figure(sprintf("calibration_%s_%s", co, format_time(t)), plot(cal) +
                    ggplot2::ggtitle(sprintf("%s, %s months", co, format_time(t))), width = 4, height = 4.2)
      }
    }
  })

  if (run("cutpoint") || run("km") || run("subgroups") || run("chemo_benefit")) st$stage("cutpoint", {
    need(st, "models")
    col <- model_column(design$cutpoint$model)
    ok <- is_train & !is.na(data[[col]])
    cp <- find_cutpoint(data[[col]][ok], data[[paste0(ep, "_time")]][ok], data[[paste0(ep, "_event")]][ok],
                        minprop = design$cutpoint$minprop)
    data$risk_group <- risk_groups(data[[col]], cp)
    res$cutpoint <- list(value = cp$value, statistic = cp$statistic, model = design$cutpoint$model,
                         cohorts = list(), secondary = list())
    for (e in c(ep, design$secondary_endpoints)) {
      per <- list()
      for (co in cohorts) {
        d <- data[data$cohort == co & !is.na(data$risk_group), , drop = FALSE]
        cg <- compare_groups(d$risk_group, d[[paste0(e, "_time")]], d[[paste0(e, "_event")]],
                             times = design$times)
        tab <- as.data.frame(cg)
        st$table(sprintf("risk_groups_%s_%s", e, co), tab)
        hi <- tab[tab$group == "high", , drop = FALSE]
        per[[co]] <- list(hr = hi$hr, hr_lower = hi$hr_lower, hr_upper = hi$hr_upper,
                          logrank_p = hi$logrank_p)
        if (run("km")) {
          st$figure(sprintf("km_%s_%s", e, co),
                    plot(cg, break_by = 12, title = sprintf("%s, %s", toupper(e), co), xlab = "Months",
                         ylab = sprintf("%s probability", toupper(e)), legend_title = "Risk group"),
                    width = 5.5, height = 5.5)
        }
      }
      if (e == ep) res$cutpoint$cohorts <- per else res$cutpoint$secondary[[e]] <- per
    }
  })

  if (run("subgroups")) st$stage("subgroups", {
    need(st, "cutpoint")
    res$subgroups <- list()
    for (co in cohorts) {
      d <- data[data$cohort == co, , drop = FALSE]
      sg <- subgroup_analysis(d, ep, "risk_group", design$subgroups$by, design$subgroups$min_events)
      st$table(paste0("subgroups_", co), as.data.frame(sg))
      st$figure(paste0("subgroups_", co), plot(sg) + ggplot2::ggtitle(co), width = 7.5,
                height = 1.2 + 0.3 * nrow(sg$table))
      res$subgroups[[co]] <- list(p_interaction = as.list(tapply(sg$table$p_interaction, sg$table$variable,
                                                                 function(p) p[1])[design$subgroups$by]),
                                  firth_levels = sum(sg$table$method == "firth"))
    }
  })

  if (run("treatment_decision")) st$stage("treatment_decision", {
    tdd <- design$treatment_decision
    td <- treatment_decision(train, ep, treatment = tdd$treatment, prognostic = tdd$prognostic,
                             predictive = tdd$predictive, covariates = tdd$covariates, time = tdd$time,
                             thresholds = tdd$thresholds)
    res$treatment_decision <- list(arms = td$arms, time = td$time,
                                   interaction_p_wald = td$interaction$p_wald,
                                   interaction_p_lrt = td$interaction$p_lrt, cohorts = list())
    st$table("treatment_model", cox_coef_table(td$fit))
    for (co in cohorts) {
      pe <- stats::predict(td, data[data$cohort == co, , drop = FALSE])
      st$table(paste0("treatment_groups_", co), pe$groups)
      st$table(paste0("treatment_patients_", co), as.data.frame(pe))
      st$figure(paste0("treatment_km_", co),
                plot(pe, type = "km", threshold = tdd$thresholds[1], subtitle = co), width = 8,
                height = 5)
      st$figure(paste0("treatment_benefit_", co), plot(pe, type = "benefit", subtitle = co), width = 5,
                height = 3.5)
      res$treatment_decision$cohorts[[co]] <- pe$groups
    }
  })

  if (run("chemo_benefit")) st$stage("chemo_benefit", {
    need(st, "cutpoint")
    cbd <- design$chemo_benefit
    arm <- as.character(data[[cbd$treatment]])
    ref <- cbd$reference %||% levels(as.factor(data[[cbd$treatment]]))[1]
    data$chemotherapy <- factor(ifelse(arm == ref, "no", "yes"), levels = c("no", "yes"))
    res$chemo_benefit <- list()
    for (co in cohorts) {
      d <- data[data$cohort == co, , drop = FALSE]
      cb <- chemo_benefit(d, ep, "risk_group", "chemotherapy", dose = cbd$dose, dose_cut = cbd$dose_cut)
      st$table(paste0("chemo_benefit_", co), as.data.frame(cb))
      st$figure(paste0("chemo_benefit_", co), plot(cb) + ggplot2::ggtitle(paste("Chemotherapy benefit,", co)),
                width = 7, height = 2.5)
      res$chemo_benefit[[co]] <- as.data.frame(cb)
    }
  })

  res$figures <- as.list(st$figures)
  res$tables <- as.list(st$tables)
  res$errors <- st$errors
  res$timings <- st$timings
  st$stage("report", {
    write_json_atomic(res, file.path(out_dir, "results.json"))
    study_report(out_dir)
  })
  res$timings <- st$timings
  res$errors <- st$errors
  write_json_atomic(res, file.path(out_dir, "results.json"))
  if (length(st$errors)) {
    stop(sprintf("run_study(%s): stage(s) failed: %s", design$study,
                 paste(sprintf("%s (%s)", names(st$errors), unlist(st$errors)), collapse = "; ")),
         call. = FALSE)
  }
  invisible(res)
}

# --- internals ----------------------------------------------------------------

# Mutable run state: output folders, stage timings and errors, written files.
study_state <- function(design, out_dir) {
  for (sub in c("tables", "figures")) dir.create(file.path(out_dir, sub), recursive = TRUE,
                                                 showWarnings = FALSE)
  st <- new.env(parent = emptyenv())
  st$timings <- list()
  st$errors <- list()
  st$figures <- character()
  st$tables <- character()
  st$stage <- function(name, expr) {
    env <- parent.frame()
    message(sprintf("[%s] %s ...", design$study, name))
    t0 <- proc.time()[["elapsed"]]
    ok <- tryCatch({
      eval(substitute(expr), env)
      TRUE
    }, error = function(e) {
      st$errors[[name]] <- conditionMessage(e)
      message(sprintf("[%s] stage '%s' failed: %s", design$study, name, conditionMessage(e)))
      FALSE
    })
    st$timings[[name]] <- round(proc.time()[["elapsed"]] - t0, 3)
    if (ok) message(sprintf("[%s] %s done (%.1f s)", design$study, name, st$timings[[name]]))
    invisible(ok)
  }
  st$table <- function(name, tab) {
    file <- file.path(out_dir, "tables", paste0(name, ".csv"))
    tmp <- paste0(file, ".tmp")
    utils::write.csv(tab, tmp, row.names = FALSE, na = "")
    file.rename(tmp, file)
    st$tables[[name]] <- file.path("tables", paste0(name, ".csv"))
  }
  st$figure <- function(name, fig, width, height) {
    if (!inherits(fig, c("ggplot", "ggsurvplot", "arrangelist"))) {
      obj <- fig
      fig <- function() plot(obj)
    }
    save_figure(fig, file.path(out_dir, "figures", name), width = width, height = height)
    st$figures[[name]] <- file.path("figures", paste0(name, ".png"))
  }
  st
}

need <- function(st, stage) {
  if (!is.null(st$errors[[stage]])) stop(sprintf("needs stage '%s', which failed", stage), call. = FALSE)
}

load_study_table <- function(table, manifest) {
  if (is.character(table) && length(table) == 1L) {
    return(read_cohort(table, manifest))
  }
  if (!is.data.frame(table)) stop("`table` must be a data frame or a cohort CSV path", call. = FALSE)
  if (!is.null(manifest)) {
    manifest <- as_manifest(manifest)
    validate_cohort(table, manifest)
    table <- apply_manifest_types(table, manifest)
  }
  table
}

# Checks the table against the design (naming every missing piece) and
# applies the design's derived columns and training-median imputation.
prepare_study_table <- function(data, design) {
  for (col in c("patient_id", "cohort")) {
    if (!col %in% names(data)) stop(sprintf("the table has no '%s' column", col), call. = FALSE)
  }
  data$cohort <- as.character(data$cohort)
  wanted <- c(design$cohorts$train, design$cohorts$test)
  miss <- setdiff(wanted, unique(data$cohort))
  if (length(miss)) {
    stop(sprintf("cohort(s) %s named by the design are not in the table (cohorts present: %s)",
                 paste(sprintf("'%s'", miss), collapse = ", "),
                 paste(sprintf("'%s'", sort(unique(data$cohort))), collapse = ", ")), call. = FALSE)
  }
  other <- setdiff(unique(data$cohort), wanted)
  if (length(other)) {
    message(sprintf("[%s] cohort(s) not in the design left out: %s", design$study,
                    paste(other, collapse = ", ")))
  }
  data <- data[data$cohort %in% wanted, , drop = FALSE]
  for (e in c(design$endpoint, design$secondary_endpoints)) {
    cols <- paste0(e, c("_time", "_event"))
    if (!all(cols %in% names(data))) {
      stop(sprintf("endpoint '%s' needs columns %s in the table", e, paste(cols, collapse = ", ")),
           call. = FALSE)
    }
  }
  miss_sig <- setdiff(design$signatures, names(data))
  if (length(miss_sig)) {
    stop(sprintf("design '%s' refers to signature(s) not in the table: %s", design$study,
                 paste(miss_sig, collapse = ", ")), call. = FALSE)
  }
  for (nm in names(design$derived)) {
    dv <- design$derived[[nm]]
    if (!is.null(dv$indicator)) {
      if (!dv$indicator %in% names(data)) stop(sprintf("derived column '%s': column '%s' not in the table",
                                                       nm, dv$indicator), call. = FALSE)
      data[[nm]] <- as.integer(as.character(data[[dv$indicator]]) == as.character(dv$level))
    } else {
      ab <- unlist(dv$product)
      if (!all(ab %in% names(data))) stop(sprintf("derived column '%s': column(s) %s not in the table", nm,
                                                  paste(setdiff(ab, names(data)), collapse = ", ")),
                                          call. = FALSE)
      data[[nm]] <- as.numeric(data[[ab[1]]]) * as.numeric(data[[ab[2]]])
    }
  }
  model_terms <- unlist(lapply(design$models, function(m) if (is.list(m)) m$select else m))
  needed <- c(design$candidates, all_vars(setdiff(model_terms, c("@selected", "@candidates", "@signatures"))),
              design$subgroups$by, design$impute_median,
              unlist(design$treatment_decision[c("treatment", "prognostic", "predictive", "covariates")]),
              unlist(design$chemo_benefit[c("treatment", "dose")]))
  miss_col <- setdiff(unique(needed), names(data))
  if (length(miss_col)) {
    stop(sprintf("design '%s' refers to column(s) not in the table: %s", design$study,
                 paste(miss_col, collapse = ", ")), call. = FALSE)
  }
  for (v in setdiff(unique(needed), c(design$signatures, design$chemo_benefit$dose))) {
    x <- data[[v]]
    if (is.ordered(x)) data[[v]] <- factor(as.character(x), levels = levels(x))
    else if (is.character(x) || is.logical(x)) data[[v]] <- factor(x)
  }
  train <- data$cohort == design$cohorts$train
  for (v in design$impute_median) {
    if (!is.numeric(data[[v]])) stop(sprintf("impute_median: column '%s' is not numeric", v), call. = FALSE)
    med <- stats::median(data[[v]][train], na.rm = TRUE)
    if (is.na(med)) stop(sprintf("impute_median: column '%s' has no training values", v), call. = FALSE)
    data[[v]][is.na(data[[v]])] <- med
  }
  data
}

# Factor candidates with a level that has no training events: their Cox
# hazard ratio is infinite (monotone likelihood), so the study runner leaves
# them out of univariate analysis and selection and records why.
zero_event_factors <- function(train, event, vars) {
  out <- character()
  for (v in vars) {
    zero <- zero_event_levels(train[[v]], train[[event]])
    if (length(zero)) out[v] <- sprintf("level %s has no training events", paste(zero, collapse = ", "))
  }
  out
}

uses_token <- function(design, token) {
  any(unlist(lapply(design$models, function(m) if (is.list(m)) m$select else m)) == token)
}

expand_terms <- function(spec, design, selected) {
  expand <- function(terms) {
    unique(unlist(lapply(terms, function(x) {
      switch(x, "@selected" = {
        if (is.null(selected)) stop("'@selected' needs the selection stage, which did not run", call. = FALSE)
        selected
      }, "@candidates" = design$candidates, "@signatures" = design$signatures, x)
    })))
  }
  if (is.list(spec)) list(select = expand(spec$select), method = spec$method) else expand(spec)
}

# Fits a model on the training rows complete for its terms (rms cph with the
# datadist stored, as select_cox does); a `select` spec runs select_cox.
fit_study_model <- function(train, endpoint, terms) {
  if (is.list(terms)) {
    return(select_cox(train, endpoint, terms$select, method = terms$method)$fit)
  }
  cols <- c(paste0(endpoint, c("_time", "_event")), all_vars(terms))
  d <- train[stats::complete.cases(train[cols]), cols, drop = FALSE]
  f <- stats::as.formula(sprintf("survival::Surv(%s_time, %s_event) ~ %s", endpoint, endpoint,
                                 paste(terms, collapse = " + ")))
  fit_cph(f, d, time_inc = 12)
}

all_vars <- function(terms) {
  if (!length(terms)) return(character())
  unique(all.vars(stats::as.formula(paste("~", paste(terms, collapse = " + ")))))
}

model_column <- function(model) paste0("score_", model)

model_lp <- function(fit, data) {
  vars <- all_vars(attr(stats::terms(fit), "term.labels"))
  ok <- stats::complete.cases(data[vars])
  lp <- rep(NA_real_, nrow(data))
  lp[ok] <- stats::predict(fit, data[ok, vars, drop = FALSE], type = "lp")
  lp
}

cox_coef_table <- function(fit) {
  b <- stats::coef(fit)
  se <- sqrt(diag(stats::vcov(fit)))[names(b)]
  z <- stats::qnorm(0.975)
  data.frame(term = names(b), hr = exp(b), lower = exp(b - z * se), upper = exp(b + z * se),
             p_value = 2 * stats::pnorm(-abs(b / se)), row.names = NULL)
}

truth_columns <- function(data, design) {
  truth <- unlist(design$truth %||% list(imaging = "truth_lp_imaging", total = "truth_lp"))
  miss <- setdiff(truth, names(data))
  if (length(miss)) {
    message(sprintf("no oracle C-index: truth column(s) %s not in the table", paste(miss, collapse = ", ")))
  }
  truth[truth %in% names(data)]
}

models_json <- function(cmp, times) {
  tab <- as.data.frame(cmp)
  out <- list()
  for (i in seq_len(nrow(tab))) {
    r <- tab[i, ]
    entry <- list(c_index = r$c_index, ci_lower = r$c_lower, ci_upper = r$c_upper, p_vs_half = r$c_p,
                  n = r$n, events = r$events)
    for (t in times) entry[[paste0("auc_", format_time(t))]] <- r[[paste0("auc_", format_time(t))]]
    out[[r$model]][[r$cohort]] <- entry
  }
  out
}

comparisons_json <- function(cmp, times) {
  tab <- as.data.frame(cmp)
  tab <- tab[tab$model != cmp$reference, , drop = FALSE]
  out <- list()
  for (i in seq_len(nrow(tab))) {
    r <- tab[i, ]
    add <- function(method, diff, p) {
      out[[length(out) + 1L]] <<- list(model = r$model, reference = cmp$reference, cohort = r$cohort,
                                       method = method, diff = diff, p = p)
    }
    add("kang", r$c_diff, r$c_p_kang)
    add("log_t", r$c_diff, r$c_p_log_t)
    for (t in times) {
      pre <- paste0("auc_", format_time(t))
      add(paste0("td_", pre), r[[paste0(pre, "_diff")]], r[[paste0(pre, "_p")]])
    }
  }
  out
}

write_json_atomic <- function(x, file) {
  json <- jsonlite::toJSON(x, auto_unbox = TRUE, na = "null", null = "null", digits = NA,
                           pretty = TRUE, dataframe = "rows")
  tmp <- paste0(file, ".tmp")
  writeLines(json, tmp)
  if (!file.rename(tmp, file)) stop("cannot write ", file, call. = FALSE)
  invisible(file)
}

#' Self-contained HTML report of a study run
#'
#' `study_report()` reads what [run_study()] wrote in `out_dir`
#' (`results.json`, `tables/`, `figures/`) and writes `out_dir/report.html`:
#' one file that opens offline, with every figure embedded as a base64 data
#' URI and inline CSS. Sections: cohorts, baseline table, univariate and
#' multivariable Cox models, model performance (C with 95% CI and p against
#' 0.5, differences to the reference model, AUC at each time), synthetic truth
#' (each signature's C next to the oracle C of the truth columns), nomogram
#' (figure and an interactive calculator in plain JavaScript), calibration,
#' risk groups (Kaplan-Meier with numbers at risk), time-dependent ROC,
#' subgroups, treatment decision, chemotherapy benefit, run time.
#'
#' The calculator has one input per predictor, `id="nomo-<variable>"`
#' (inputs of derived columns are computed), and outputs
#' `id="nomo-total"`, `id="nomo-surv-<time>"` (e.g. `nomo-surv-36`) and
#' `id="nomo-points-<variable>"`, each with the full-precision number in its
#' `data-value` attribute. It applies the [nomogram_spec()] mapping:
#' points per predictor, total points, \eqn{lp = a + b \cdot total},
#' \eqn{S(t) = S_0(t)^{\exp(lp)}}. Table `nomo-check` lists R's values for
#' a few patients to compare with.
#'
#' `write_index_html()` writes a top-level page listing several study runs
#' with their headline numbers (C of the nomogram model and of the oracle per
#' cohort, cutpoint hazard ratios, failed stages), linking to each report.
#'
#' @param out_dir Folder written by [run_study()].
#' @return The path of the HTML file, invisibly.
#' @export
study_report <- function(out_dir) {
  res_file <- file.path(out_dir, "results.json")
  if (!file.exists(res_file)) stop(sprintf("study_report(): no results.json in '%s'", out_dir), call. = FALSE)
  res <- jsonlite::fromJSON(res_file, simplifyVector = FALSE)
  tab <- function(name) {
    f <- file.path(out_dir, "tables", paste0(name, ".csv"))
    if (file.exists(f)) utils::read.csv(f, check.names = FALSE, stringsAsFactors = FALSE) else NULL
  }
  fig <- function(name, caption = NULL) {
    f <- file.path(out_dir, "figures", paste0(name, ".png"))
    if (!file.exists(f)) return("")
    uri <- paste0("data:image/png;base64,", jsonlite::base64_enc(readBin(f, "raw", file.info(f)$size)))
    sprintf('<figure id="fig-%s"><img src="%s" alt="%s"/>%s</figure>', html_escape(name), uri,
            html_escape(name), if (is.null(caption)) "" else sprintf("<figcaption>%s</figcaption>",
                                                                     html_escape(caption)))
  }
  figs <- as.character(names(res$figures))
  figs_like <- function(prefix) paste(vapply(figs[startsWith(figs, prefix)], fig, ""), collapse = "\n")
  tabs <- as.character(names(res$tables))
  cohorts <- unlist(res$cohorts)
  sec <- list()
  add <- function(id, title, ...) {
    body <- paste(c(...), collapse = "\n")
    if (nzchar(trimws(body))) {
      sec[[length(sec) + 1L]] <<- sprintf('<section id="%s"><h2>%s</h2>\n%s\n</section>', id,
                                          html_escape(title), body)
    }
  }

  cohort_rows <- data.frame(cohort = cohorts, patients = unlist(res$n[cohorts]),
                            events = unlist(res$events[cohorts]))
  errors <- ""
  if (length(res$errors)) {
    errors <- sprintf("<div class=\"error\"><b>Failed stages:</b><ul>%s</ul></div>",
                      paste(sprintf("<li>%s: %s</li>", html_escape(names(res$errors)),
                                    html_escape(unlist(res$errors))), collapse = ""))
  }
  add("cohorts", "Cohorts", errors, html_table(cohort_rows))
  add("baseline", "Baseline characteristics", html_table(tab("baseline")))
  add("cox", "Cox regression",
      if (!is.null(tab("univariate"))) {
        c("<h3>Univariate (training cohort)</h3>", html_table(tab("univariate")))
      },
      if (!is.null(res$selection)) {
        sprintf("<p>Clinical selection (%s) kept: <b>%s</b></p>", html_escape(res$selection$method),
                html_escape(paste(unlist(res$selection$selected), collapse = ", ")))
      },
      if (!is.null(tab("selection_path"))) html_table(tab("selection_path")),
      unlist(lapply(tabs[startsWith(tabs, "multivariable_")], function(t) {
        c(sprintf("<h3>Multivariable model: %s</h3>", html_escape(sub("^multivariable_", "", t))),
          html_table(tab(t)))
      })))
  add("performance", "Model performance",
      sprintf(paste("<p>Harrell's C (95%% CI, Z-test against 0.5); differences against the reference",
                    "model <b>%s</b> by Kang's test and the paired test on log C; time-dependent AUC",
                    "(marginal IPCW) with differences (unadjusted p).</p>"),
              html_escape(reference_model(res))),
      html_table(performance_table(res)))
  add("truth", "Synthetic truth", truth_table(res, cohorts))
  add("nomogram", "Nomogram", fig("nomogram"), nomogram_widget(res$nomogram))
  add("calibration", "Calibration", calibration_table(res), figs_like("calibration_"))
  add("km", "Risk groups", cutpoint_table(res), figs_like("km_"))
  add("tdroc", "Time-dependent ROC", fig("td_roc"))
  add("subgroups", "Subgroup analysis", figs_like("subgroups_"))
  add("treatment", "Treatment decision",
      if (!is.null(res$treatment_decision)) sprintf(
        "<p>Treatment x predictive-score interaction in the training model: Wald P = %s, LRT P = %s.</p>",
        format_p(num(res$treatment_decision$interaction_p_wald)),
        format_p(num(res$treatment_decision$interaction_p_lrt))),
      unlist(lapply(cohorts, function(co) {
        t <- tab(paste0("treatment_groups_", co))
        if (is.null(t)) return(NULL)
        c(sprintf("<h3>%s</h3>", html_escape(co)), html_table(t), fig(paste0("treatment_km_", co)),
          fig(paste0("treatment_benefit_", co)))
      })))
  add("chemo", "Chemotherapy benefit", unlist(lapply(cohorts, function(co) {
    t <- tab(paste0("chemo_benefit_", co))
    if (is.null(t)) return(NULL)
    c(sprintf("<h3>%s</h3>", html_escape(co)), html_table(t), fig(paste0("chemo_benefit_", co)))
  })))
  add("timings", "Run time", html_table(data.frame(stage = names(res$timings),
                                                   seconds = unlist(res$timings))))
  ids <- regmatches(unlist(sec), regexpr("(?<=id=\")[^\"]+", unlist(sec), perl = TRUE))
  titles <- regmatches(unlist(sec), regexpr("(?<=<h2>)[^<]+", unlist(sec), perl = TRUE))
  nav <- paste(sprintf("<a href=\"#%s\">%s</a>", ids, titles), collapse = " | ")
  head <- sprintf(paste0("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>",
                         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>",
                         "<title>%s: study report</title><style>%s</style></head><body>"),
                  html_escape(res$study), report_css())
  header <- sprintf(paste0("<header><h1>Study %s</h1><p>Endpoint <b>%s</b>; preset %s; seed %s.</p>",
                           "<nav>%s</nav></header>"),
                    html_escape(res$study), html_escape(toupper(res$endpoint)),
                    html_escape(format(res$preset %||% "NA")), html_escape(format(res$seed %||% "NA")), nav)
  html <- paste0(head, header, paste(unlist(sec), collapse = "\n"), "</body></html>")
  file <- file.path(out_dir, "report.html")
  tmp <- paste0(file, ".tmp")
  writeLines(html, tmp, useBytes = TRUE)
  file.rename(tmp, file)
  invisible(file)
}

#' @rdname study_report
#' @param results_dirs Folders written by [run_study()].
#' @param file Path of the index page.
#' @export
write_index_html <- function(results_dirs, file) {
  if (!is.character(results_dirs) || !length(results_dirs)) {
    stop("write_index_html(): `results_dirs` must name study folders", call. = FALSE)
  }
  base <- normalizePath(dirname(file), mustWork = FALSE)
  rows <- lapply(results_dirs, function(dir) {
    f <- file.path(dir, "results.json")
    if (!file.exists(f)) {
      return(sprintf('<tr><td>%s</td><td colspan="5" class="error">no results.json</td></tr>',
                     html_escape(basename(dir))))
    }
    res <- jsonlite::fromJSON(f, simplifyVector = FALSE)
    target <- normalizePath(file.path(dir, "report.html"), mustWork = FALSE)
    link <- if (startsWith(target, paste0(base, "/"))) substring(target, nchar(base) + 2L) else
      paste0("file://", target)
    nomo <- res$nomogram$model %||% names(res$models)[length(res$models)]
    cohorts <- unlist(res$cohorts)
    cell <- function(fun) {
      paste(vapply(cohorts, function(co) sprintf("%s: %s", html_escape(co), fun(co)), ""), collapse = "<br/>")
    }
    c_model <- cell(function(co) {
      m <- res$models[[nomo]][[co]]
      if (is.null(m)) "NA" else sprintf("%.3f (%.3f-%.3f)", num(m$c_index), num(m$ci_lower), num(m$ci_upper))
    })
    c_oracle <- ""
    if (!is.null(res$oracle_c)) c_oracle <- cell(function(co) sprintf("%.3f", num(res$oracle_c[[co]]$total)))
    hr <- if (is.null(res$cutpoint)) "" else cell(function(co) {
      h <- res$cutpoint$cohorts[[co]]
      sprintf("%.2f (P %s)", num(h$hr), format_p(num(h$logrank_p)))
    })
    err <- if (length(res$errors)) sprintf('<span class="error">%s</span>',
                                           html_escape(paste(names(res$errors), collapse = ", "))) else "none"
    sprintf(paste0("<tr><td><a href=\"%s\">%s</a></td><td>%s</td><td>%s<br/><small>model %s</small></td>",
                   "<td>%s</td><td>%s</td><td>%s</td></tr>"),
            html_escape(link), html_escape(res$study), html_escape(toupper(res$endpoint)), c_model,
            html_escape(nomo), c_oracle, hr, err)
  })
  html <- sprintf(paste0(
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>deepnomo studies</title>",
    "<style>%s</style></head><body><h1>Study designs</h1><table id=\"studies\"><thead><tr>",
    "<th>Study</th><th>Endpoint</th><th>C-index of the nomogram model (95%% CI)</th>",
    "<th>Oracle C (true total risk)</th><th>Risk groups: HR high vs low (log-rank)</th>",
    "<th>Failed stages</th></tr></thead><tbody>%s</tbody></table></body></html>"),
    report_css(), paste(unlist(rows), collapse = "\n"))
  dir.create(dirname(file), recursive = TRUE, showWarnings = FALSE)
  tmp <- paste0(file, ".tmp")
  writeLines(html, tmp, useBytes = TRUE)
  file.rename(tmp, file)
  invisible(file)
}

# --- internals ----------------------------------------------------------------

num <- function(x) if (is.null(x)) NA_real_ else as.numeric(x)

html_escape <- function(x) {
  x <- gsub("&", "&amp;", as.character(x), fixed = TRUE)
  x <- gsub("<", "&lt;", x, fixed = TRUE)
  x <- gsub(">", "&gt;", x, fixed = TRUE)
  gsub("\"", "&quot;", x, fixed = TRUE)
}

html_table <- function(df, id = NULL) {
  if (is.null(df) || !nrow(df)) return("")
  cells <- vapply(names(df), function(nm) {
    x <- df[[nm]]
    if (is.numeric(x)) {
      whole <- all(is.na(x) | x == round(x))
      out <- if (grepl("(^p$|^p_|_p$|_p_|^p value)", nm)) {
        format_p(x)
      } else if (whole) {
        formatC(x, format = "d", big.mark = "")
      } else {
        formatC(x, digits = 3, format = "fg", flag = "#")
      }
      out[is.na(x)] <- ""
      sub("\\.$", "", out)
    } else {
      ifelse(is.na(x), "", html_escape(x))
    }
  }, character(nrow(df)))
  if (!is.matrix(cells)) cells <- matrix(cells, nrow = nrow(df))
  rows <- apply(cells, 1, function(r) {
    paste0("<tr>", paste(sprintf("<td>%s</td>", r), collapse = ""), "</tr>")
  })
  sprintf("<table%s><thead><tr>%s</tr></thead><tbody>%s</tbody></table>",
          if (is.null(id)) "" else sprintf(" id=\"%s\"", id),
          paste(sprintf("<th>%s</th>", html_escape(names(df))), collapse = ""),
          paste(rows, collapse = "\n"))
}

reference_model <- function(res) {
  if (length(res$comparisons)) res$comparisons[[1]]$reference else ""
}

performance_table <- function(res) {
  if (is.null(res$models)) return(NULL)
  rows <- list()
  ref <- reference_model(res)
  for (m in names(res$models)) for (co in names(res$models[[m]])) {
    r <- res$models[[m]][[co]]
    row <- data.frame(model = m, cohort = co,
                      `C (95% CI)` = sprintf("%.3f (%.3f-%.3f)", num(r$c_index), num(r$ci_lower),
                                             num(r$ci_upper)),
                      `P vs 0.5` = format_p(num(r$p_vs_half)), check.names = FALSE)
    cmp <- Filter(function(x) x$model == m && x$cohort == co, res$comparisons)
    get <- function(method, what) {
      hit <- Filter(function(x) x$method == method, cmp)
      if (length(hit)) num(hit[[1]][[what]]) else NA_real_
    }
    row[[sprintf("C diff vs %s", ref)]] <- ifelse(is.na(get("kang", "diff")), "",
                                                 sprintf("%+.3f", get("kang", "diff")))
    row[["P (Kang)"]] <- ifelse(is.na(get("kang", "p")), "", format_p(get("kang", "p")))
    row[["P (log C)"]] <- ifelse(is.na(get("log_t", "p")), "", format_p(get("log_t", "p")))
    for (k in grep("^auc_", names(r), value = TRUE)) {
      row[[sprintf("AUC %s mo", sub("^auc_", "", k))]] <- sprintf("%.3f", num(r[[k]]))
      p <- get(paste0("td_", k), "p")
      row[[sprintf("P AUC %s", sub("^auc_", "", k))]] <- ifelse(is.na(p), "", format_p(p))
    }
    rows[[length(rows) + 1L]] <- row
  }
  do.call(rbind, rows)
}

truth_table <- function(res, cohorts) {
  if (is.null(res$signatures) && is.null(res$oracle_c)) return("")
  rows <- list()
  for (s in names(res$signatures)) {
    row <- data.frame(signature = s)
    for (co in cohorts) {
      r <- res$signatures[[s]][[co]]
      row[[co]] <- sprintf("%.3f (%.3f-%.3f)", num(r$c_index), num(r$ci_lower), num(r$ci_upper))
    }
    rows[[length(rows) + 1L]] <- row
  }
  if (!is.null(res$oracle_c)) {
    for (k in c("imaging", "total")) {
      if (is.null(res$oracle_c[[cohorts[1]]][[k]])) next
      row <- data.frame(signature = sprintf("oracle: true %s risk", k))
      for (co in cohorts) row[[co]] <- sprintf("%.3f", num(res$oracle_c[[co]][[k]]))
      rows[[length(rows) + 1L]] <- row
    }
  }
  c(paste("<p>Harrell's C of each signature as produced, next to the C of the true risk",
          "(the ceiling any signature can reach on these patients).</p>"),
    html_table(do.call(rbind, rows), id = "truth-table"))
}

calibration_table <- function(res) {
  if (is.null(res$calibration)) return("")
  rows <- list()
  for (co in names(res$calibration)) for (t in names(res$calibration[[co]])) {
    r <- res$calibration[[co]][[t]]
    rows[[length(rows) + 1L]] <- data.frame(cohort = co, months = t, hl_chi2 = num(r$hl_chi2),
                                            df = num(r$df), hl_p = num(r$p))
  }
  c(paste("<p>Hosmer-Lemeshow-type test for censored data (D'Agostino-Nam) of the nomogram model;",
          "the training cohort also shows the bootstrap-corrected curve.</p>"),
    html_table(do.call(rbind, rows)))
}

cutpoint_table <- function(res) {
  cp <- res$cutpoint
  if (is.null(cp)) return("")
  per_endpoint <- c(stats::setNames(list(cp$cohorts), res$endpoint), cp$secondary)
  rows <- unlist(lapply(names(per_endpoint), function(e) {
    lapply(names(per_endpoint[[e]]), function(co) {
      r <- per_endpoint[[e]][[co]]
      data.frame(endpoint = toupper(e), cohort = co, hr_high_vs_low = num(r$hr), lower = num(r$hr_lower),
                 upper = num(r$hr_upper), logrank_p = num(r$logrank_p))
    })
  }), recursive = FALSE)
  c(sprintf(paste("<p>Cutpoint of the %s model score learned on the training cohort (maximally",
                  "selected log-rank statistic) and applied unchanged: %.4f.</p>"),
            html_escape(cp$model), num(cp$value)),
    html_table(do.call(rbind, rows)))
}

nomogram_widget <- function(spec) {
  if (is.null(spec)) return("")
  json <- jsonlite::toJSON(spec, auto_unbox = TRUE, digits = NA, na = "null", null = "null")
  json <- gsub("</", "<\\/", json, fixed = TRUE)
  check <- spec$check
  check_html <- ""
  if (length(check)) {
    as_row <- function(r) as.data.frame(lapply(r, function(v) if (is.null(v)) NA else v), check.names = FALSE)
    check_html <- c(paste("<p>R's values for a few patients (nomogram_score; <code>predict_lp</code>",
                          "from predict() on the model):</p>"),
                    html_table(do.call(rbind, lapply(check, as_row)), id = "nomo-check"))
  }
  c('<h3>Calculator</h3><div id="nomo-calc"><div id="nomo-inputs"></div>',
    '<p>Total points: <b id="nomo-total" data-value="">-</b></p><div id="nomo-outputs"></div></div>',
    sprintf('<script type="application/json" id="nomo-spec">%s</script>', json),
    sprintf("<script>%s</script>", nomogram_js()), check_html)
}

nomogram_js <- function() report_asset("nomogram.js")

report_css <- function() report_asset("report.css")

report_asset <- function(name) {
  path <- system.file("report", name, package = "deepnomo")
  if (!nzchar(path)) stop(sprintf("report asset '%s' is not installed with deepnomo", name), call. = FALSE)
  paste(readLines(path, warn = FALSE), collapse = "\n")
}

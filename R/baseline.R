# Table 1: patient characteristics by cohort, with the tests the source
# studies used. The table layout and the rule that picks a test are written
# here; every test itself is the one in package stats.

#' Baseline characteristics table ("Table 1")
#'
#' Summarises each variable within each level of `by` and tests for a
#' difference between the groups.
#'
#' Continuous (numeric) variables: median (range) or median (IQR) per group,
#' plus a "mean (SD)" row when `mean_sd = TRUE`. Test: Shapiro-Wilk
#' ([stats::shapiro.test()]) within each group; if any group gives p < 0.05
#' (or has fewer than 3 or more than 5000 values, or is constant, where the
#' test is undefined) the variable is treated as non-normal. Two groups:
#' Welch t-test ([stats::t.test()]) when normal, Wilcoxon rank-sum
#' ([stats::wilcox.test()], normal approximation with continuity correction
#' when there are ties) otherwise. More than two groups: one-way ANOVA
#' ([stats::oneway.test()] with `var.equal = TRUE`) when normal,
#' Kruskal-Wallis ([stats::kruskal.test()]) otherwise.
#'
#' Categorical (factor, character, logical) variables: one row per level with
#' "n (%)". Test on the table of non-missing values: Pearson's chi-square
#' ([stats::chisq.test()] defaults, i.e. Yates' correction for 2 x 2) or
#' Fisher's exact test ([stats::fisher.test()]) when any expected count is
#' below 5.
#'
#' Missing values of any variable appear as an extra level "Unknown" with
#' "n (%)" (percent of the group), and are left out of the test.
#'
#' @param data A data frame.
#' @param by Name of the grouping column (e.g. `"cohort"`); its missing values
#'   are refused.
#' @param vars Names of the columns to summarise.
#' @param continuous `"median_range"` or `"median_iqr"`.
#' @param mean_sd Add a "mean (SD)" row for continuous variables.
#' @param file Optional output path: `<stem>.csv` is written with the table
#'   and `<stem>.md` with a markdown table (or `<stem>.html` when `file` ends
#'   in `.html`).
#' @param digits Decimal places of summaries.
#' @return A data frame with columns `variable`, `level`, one column per group
#'   (named by the group level), `p_value` (on the first row of each variable)
#'   and `test_used` (the name of the test). The first row (`variable = "N"`) gives the group sizes.
#' @references Shapiro SS, Wilk MB (1965). Biometrika 52:591-611.
#' @examples
#' d <- survival::pbc[1:312, ]
#' d$trt <- factor(d$trt, 1:2, c("D-penicillamine", "placebo"))
#' baseline_table(d, "trt", c("age", "bili", "sex", "stage"))
#' @export
baseline_table <- function(data, by, vars, continuous = c("median_range", "median_iqr"),
                           mean_sd = FALSE, file = NULL, digits = 1) {
  continuous <- match.arg(continuous)
  if (!is.data.frame(data)) {
    stop("baseline_table(): `data` must be a data frame, not ", class(data)[1], call. = FALSE)
  }
  if (!is.character(by) || length(by) != 1L || !by %in% names(data)) {
    stop("baseline_table(): `by` must name one column of `data`", call. = FALSE)
  }
  if (!is.character(vars) || length(vars) == 0L) {
    stop("baseline_table(): `vars` must be a non-empty character vector", call. = FALSE)
  }
  unknown <- setdiff(vars, names(data))
  if (length(unknown)) {
    stop("baseline_table(): unknown variable(s) in `vars`: ", paste(unknown, collapse = ", "),
         call. = FALSE)
  }
  if (by %in% vars) stop("baseline_table(): `by` is also listed in `vars`", call. = FALSE)
  g <- data[[by]]
  if (anyNA(g)) {
    stop(sprintf("baseline_table(): `by` column %s has missing values (rows %s)", by,
                 paste(utils::head(which(is.na(g)), 5), collapse = ", ")), call. = FALSE)
  }
  g <- droplevels(as.factor(g))
  if (nlevels(g) < 2L) {
    stop(sprintf("baseline_table(): `by` column %s has fewer than two groups", by), call. = FALSE)
  }
  groups <- levels(g)
  clash <- intersect(groups, c("variable", "level", "p_value", "test_used"))
  if (length(clash)) {
    stop(sprintf("baseline_table(): `by` level(s) %s clash with the table's column names",
                 paste(clash, collapse = ", ")), call. = FALSE)
  }
  n_g <- table(g)

  pct <- function(k, n) sprintf("%d (%.*f%%)", k, digits, 100 * k / n)
  rows <- list(make_row("N", "", as.character(as.integer(n_g)), groups, NA_real_, ""))
  for (v in vars) {
    x <- data[[v]]
    if (is.character(x) || is.logical(x)) x <- factor(x)
    if (is.numeric(x) && !is.factor(x)) {
      tst <- continuous_test(x, g)
      summ <- vapply(groups, function(l) {
        xi <- x[g == l & !is.na(x)]
        if (!length(xi)) return("-")
        q <- if (continuous == "median_range") range(xi) else stats::quantile(xi, c(0.25, 0.75))
        sprintf("%.*f (%.*f-%.*f)", digits, stats::median(xi), digits, q[1], digits, q[2])
      }, character(1))
      label <- if (continuous == "median_range") "median (range)" else "median (IQR)"
      rows[[length(rows) + 1L]] <- make_row(v, label, summ, groups, tst$p, tst$test)
      if (mean_sd) {
        ms <- vapply(groups, function(l) {
          xi <- x[g == l & !is.na(x)]
          if (length(xi) < 2L) return("-")
          sprintf("%.*f (%.*f)", digits, mean(xi), digits, stats::sd(xi))
        }, character(1))
        rows[[length(rows) + 1L]] <- make_row(v, "mean (SD)", ms, groups, NA_real_, "")
      }
    } else if (is.factor(x)) {
      tst <- categorical_test(x, g)
      lev <- levels(droplevels(x))
      for (i in seq_along(lev)) {
        cnt <- vapply(groups, function(l) pct(sum(x[g == l] == lev[i], na.rm = TRUE), n_g[[l]]),
                      character(1))
        rows[[length(rows) + 1L]] <- make_row(v, lev[i], cnt, groups,
                                              if (i == 1L) tst$p else NA_real_,
                                              if (i == 1L) tst$test else "")
      }
    } else {
      stop(sprintf("baseline_table(): variable `%s` must be numeric, factor, character or logical",
                   v), call. = FALSE)
    }
    if (anyNA(x)) {
      cnt <- vapply(groups, function(l) pct(sum(is.na(x[g == l])), n_g[[l]]), character(1))
      rows[[length(rows) + 1L]] <- make_row(v, "Unknown", cnt, groups, NA_real_, "")
    }
  }
  out <- do.call(rbind, rows)
  rownames(out) <- NULL
  if (!is.null(file)) write_baseline_table(out, file)
  out
}

#' One row of the baseline table
#' @noRd
make_row <- function(variable, level, cells, groups, p, test) {
  row <- data.frame(variable = variable, level = level, stringsAsFactors = FALSE)
  for (i in seq_along(groups)) row[[groups[i]]] <- cells[[i]]
  row$p_value <- p
  row$test_used <- test
  row
}

#' Shapiro-Wilk decides the test for a numeric variable
#' @noRd
continuous_test <- function(x, g) {
  ok <- !is.na(x)
  x <- x[ok]
  g <- droplevels(g[ok])
  if (nlevels(g) < 2L) return(list(p = NA_real_, test = "not tested (one group)"))
  normal <- all(vapply(split(x, g), function(xi) {
    if (length(xi) < 3L || length(xi) > 5000L || length(unique(xi)) < 2L) return(FALSE)
    stats::shapiro.test(xi)$p.value >= 0.05
  }, logical(1)))
  if (nlevels(g) == 2L) {
    xs <- split(x, g)
    if (normal) {
      list(p = stats::t.test(xs[[1]], xs[[2]])$p.value, test = "Welch t-test")
    } else {
      list(p = suppressWarnings(stats::wilcox.test(xs[[1]], xs[[2]])$p.value),
           test = "Wilcoxon rank-sum")
    }
  } else if (normal) {
    list(p = stats::oneway.test(x ~ g, var.equal = TRUE)$p.value, test = "ANOVA")
  } else {
    list(p = stats::kruskal.test(x, g)$p.value, test = "Kruskal-Wallis")
  }
}

#' Chi-square, or Fisher's exact test when an expected count is below 5
#' @noRd
categorical_test <- function(x, g) {
  tab <- table(droplevels(x), g)
  tab <- tab[rowSums(tab) > 0, colSums(tab) > 0, drop = FALSE]
  if (nrow(tab) < 2L || ncol(tab) < 2L) return(list(p = NA_real_, test = "not tested"))
  expected <- outer(rowSums(tab), colSums(tab)) / sum(tab)
  if (any(expected < 5)) {
    list(p = stats::fisher.test(tab, workspace = 2e7)$p.value, test = "Fisher's exact")
  } else {
    list(p = stats::chisq.test(tab)$p.value, test = "Chi-square")
  }
}

#' Write the table as CSV plus markdown or HTML, atomically
#' @noRd
write_baseline_table <- function(tab, file) {
  if (!is.character(file) || length(file) != 1L || !nzchar(file)) {
    stop("baseline_table(): `file` must be one path", call. = FALSE)
  }
  html <- grepl("\\.html?$", file, ignore.case = TRUE)
  stem <- sub("\\.(csv|md|html?)$", "", file, ignore.case = TRUE)
  dir.create(dirname(stem), recursive = TRUE, showWarnings = FALSE)
  shown <- tab
  shown$p_value <- ifelse(is.na(tab$p_value), "", table_p_format(tab$p_value))
  shown$variable[duplicated(tab$variable)] <- ""
  cells <- as.matrix(shown)
  cells[is.na(cells)] <- ""
  text <- if (html) {
    esc <- function(s) gsub("<", "&lt;", gsub("&", "&amp;", s))
    c("<table>", paste0("<thead><tr>", paste0("<th>", esc(colnames(cells)), "</th>",
                                              collapse = ""), "</tr></thead>"), "<tbody>",
      apply(cells, 1, function(r) {
        paste0("<tr>", paste0("<td>", esc(r), "</td>", collapse = ""), "</tr>")
      }), "</tbody>", "</table>")
  } else {
    c(paste0("| ", paste(colnames(cells), collapse = " | "), " |"),
      paste0("|", paste(rep("---", ncol(cells)), collapse = "|"), "|"),
      apply(cells, 1, function(r) paste0("| ", paste(r, collapse = " | "), " |")))
  }
  targets <- c(paste0(stem, ".csv"), paste0(stem, if (html) ".html" else ".md"))
  tmp <- paste0(targets, ".tmp")
  utils::write.csv(tab, tmp[1], row.names = FALSE)
  writeLines(text, tmp[2])
  ok <- file.rename(tmp, targets)
  if (!all(ok)) stop("baseline_table(): could not write ", targets[!ok][1], call. = FALSE)
  invisible(targets)
}

#' p-values as reported in tables: 3 decimals, "<0.001" below
#' @noRd
table_p_format <- function(p) ifelse(p < 0.001, "<0.001", sprintf("%.3f", p))

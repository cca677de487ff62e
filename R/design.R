#' Study designs: read and check
#'
#' A study design (YAML file or list) names everything [run_study()] needs:
#'
#' - `study`, `description`, `seed` (bootstrap seed, default 1);
#' - `endpoint` (primary) and `secondary_endpoints`;
#' - `cohorts`: `train` (one label) and `test` (labels), values of the
#'   table's `cohort` column;
#' - `candidates`: clinical candidate columns; `selection`: `"backward"`,
#'   `"both"` or `"significant"` ([select_cox()]);
#' - `signatures`: `sig_*` columns of the table;
#' - `models`: name -> list of terms, or `{select: [terms], method: ...}` for
#'   a model chosen by [select_cox()]; the tokens `"@selected"` (the clinical
#'   variables selected from `candidates`), `"@candidates"` and
#'   `"@signatures"` expand in place;
#' - `reference` (model every other model is compared with), `nomogram`
#'   (model drawn as nomogram; default: the last model), `times`;
#' - `calibration`: `times`, `groups`, `B` (bootstrap resamples);
#' - `cutpoint`: `model` (default: the nomogram model), `minprop`;
#' - `subgroups`: `by` (columns), `min_events`;
#' - `treatment_decision`: `treatment`, `prognostic`, `predictive`,
#'   `covariates`, `time`, `thresholds` (see [treatment_decision()]);
#' - `chemo_benefit`: `treatment`, `reference` (level meaning no
#'   chemotherapy), `dose`, `dose_cut` (see [chemo_benefit()]);
#' - `derived`: new columns, name -> `{indicator: column, level: value}`
#'   (1 where the column equals the level) or `{product: [a, b]}`;
#' - `impute_median`: numeric columns whose missing values are filled with the
#'   training median;
#' - `truth`: `imaging`, `total` (synthetic ground-truth linear predictors;
#'   default `truth_lp_imaging` and `truth_lp`; skipped when not in the table);
#' - `analyses`: which of `baseline`, `univariate`, `selection`, `nomogram`,
#'   `calibration`, `cutpoint`, `km`, `td_roc`, `subgroups`,
#'   `treatment_decision`, `chemo_benefit` to run (model fitting and the
#'   performance table always run).
#'
#' `validate_design()` refuses unknown keys (at the top level and inside each
#' section) and wrong types, naming them, and fills in defaults. The five
#' designs of the package are in `system.file("designs", package =
#' "deepnomo")`; copy one, edit it, and pass its path to [run_study()].
#'
#' @param design A path to a YAML file, or a list.
#' @return `read_design()`: the validated design (a list). `validate_design()`:
#'   the same, from a list.
#' @examples
#' d <- read_design(system.file("designs", "t3n1.yaml", package = "deepnomo"))
#' d$models
#' @export
read_design <- function(design) {
  if (is.character(design) && length(design) == 1L) {
    if (!file.exists(design)) stop(sprintf("read_design(): design file '%s' not found", design),
                                   call. = FALSE)
    path <- design
    design <- tryCatch(yaml::read_yaml(path), error = function(e) {
      stop(sprintf("read_design(): cannot parse '%s': %s", path, conditionMessage(e)), call. = FALSE)
    })
  }
  validate_design(design)
}

#' @rdname read_design
#' @export
validate_design <- function(design) {
  if (!is.list(design) || is.null(names(design))) {
    stop("validate_design(): `design` must be a named list (or a YAML file path)", call. = FALSE)
  }
  spec <- design_keys()
  check_keys(design, names(spec), "design")
  for (section in c("cohorts", "calibration", "cutpoint", "subgroups", "treatment_decision",
                    "chemo_benefit", "truth")) {
    if (!is.null(design[[section]])) {
      if (!is.list(design[[section]])) {
        stop(sprintf("design: '%s' must be a mapping with keys [%s]", section,
                     paste(spec[[section]], collapse = ", ")), call. = FALSE)
      }
      check_keys(design[[section]], spec[[section]], paste0("design$", section))
    }
  }
  for (key in c("study", "endpoint", "cohorts", "models")) {
    if (is.null(design[[key]])) stop(sprintf("design: required key '%s' is missing", key), call. = FALSE)
  }
  one_string <- function(x, key) {
    if (!is.character(x) || length(x) != 1L || !nzchar(x)) {
      stop(sprintf("design: '%s' must be one string", key), call. = FALSE)
    }
  }
  one_string(design$study, "study")
  one_string(design$endpoint, "endpoint")
  if (is.null(design$cohorts$train)) stop("design: 'cohorts' needs 'train'", call. = FALSE)
  one_string(design$cohorts$train, "cohorts$train")
  design$cohorts$test <- as.character(unlist(design$cohorts$test))
  design$secondary_endpoints <- as.character(unlist(design$secondary_endpoints))
  design$candidates <- as.character(unlist(design$candidates))
  design$signatures <- as.character(unlist(design$signatures))
  bad_sig <- design$signatures[!grepl("^sig_", design$signatures)]
  if (length(bad_sig)) {
    stop(sprintf("design: signature names must start with 'sig_': %s", paste(bad_sig, collapse = ", ")),
         call. = FALSE)
  }
  design$selection <- design$selection %||% "backward"
  if (!design$selection %in% c("backward", "both", "significant")) {
    stop(sprintf("design: 'selection' must be backward, both or significant, not '%s'", design$selection),
         call. = FALSE)
  }
  if (!is.list(design$models) || is.null(names(design$models)) || any(!nzchar(names(design$models)))) {
    stop("design: 'models' must map model names to terms", call. = FALSE)
  }
  for (m in names(design$models)) {
    spec_m <- design$models[[m]]
    if (is.list(spec_m) && !is.null(names(spec_m))) {
      check_keys(spec_m, c("select", "method"), sprintf("design$models$%s", m))
      if (is.null(spec_m$select)) stop(sprintf("design: model '%s' needs 'select'", m), call. = FALSE)
      design$models[[m]] <- list(select = as.character(unlist(spec_m$select)),
                                 method = spec_m$method %||% design$selection)
    } else {
      design$models[[m]] <- as.character(unlist(spec_m))
      if (!length(design$models[[m]])) stop(sprintf("design: model '%s' has no terms", m), call. = FALSE)
    }
  }
  design$reference <- design$reference %||% names(design$models)[1]
  design$nomogram <- design$nomogram %||% names(design$models)[length(design$models)]
  for (key in c("reference", "nomogram")) {
    if (!design[[key]] %in% names(design$models)) {
      stop(sprintf("design: '%s' names model '%s', not among the models (%s)", key, design[[key]],
                   paste(names(design$models), collapse = ", ")), call. = FALSE)
    }
  }
  design$times <- as.numeric(unlist(design$times %||% c(36, 60)))
  if (!length(design$times) || anyNA(design$times) || any(design$times <= 0)) {
    stop("design: 'times' must be positive numbers", call. = FALSE)
  }
  design$seed <- as.integer(design$seed %||% 1L)
  design$calibration <- utils::modifyList(list(times = design$times, groups = 5, B = 50),
                                          design$calibration %||% list())
  design$calibration$times <- as.numeric(unlist(design$calibration$times))
  design$cutpoint <- utils::modifyList(list(model = design$nomogram, minprop = 0.1),
                                       design$cutpoint %||% list())
  if (!design$cutpoint$model %in% names(design$models)) {
    stop(sprintf("design: 'cutpoint$model' names model '%s', not among the models", design$cutpoint$model),
         call. = FALSE)
  }
  design$subgroups <- utils::modifyList(list(by = character(), min_events = 5), design$subgroups %||% list())
  design$subgroups$by <- as.character(unlist(design$subgroups$by))
  design$impute_median <- as.character(unlist(design$impute_median))
  design$derived <- design$derived %||% list()
  for (nm in names(design$derived)) {
    dv <- design$derived[[nm]]
    ok <- is.list(dv) && ((setequal(names(dv), c("indicator", "level"))) ||
                            (identical(names(dv), "product") && length(unlist(dv$product)) == 2L))
    if (!ok) {
      stop(sprintf(paste("design: derived column '%s' must be {indicator: column, level: value}",
                         "or {product: [a, b]}"), nm), call. = FALSE)
    }
  }
  known <- analysis_names()
  design$analyses <- as.character(unlist(design$analyses %||% known[1:9]))
  bad <- setdiff(design$analyses, known)
  if (length(bad)) {
    stop(sprintf("design: unknown analyses [%s]; known: [%s]", paste(bad, collapse = ", "),
                 paste(known, collapse = ", ")), call. = FALSE)
  }
  for (a in c("treatment_decision", "chemo_benefit")) {
    if (a %in% design$analyses && is.null(design[[a]])) {
      stop(sprintf("design: analysis '%s' is listed but the '%s' section is missing", a, a), call. = FALSE)
    }
  }
  if ("subgroups" %in% design$analyses && !length(design$subgroups$by)) {
    stop("design: analysis 'subgroups' is listed but 'subgroups$by' is empty", call. = FALSE)
  }
  if (!is.null(design$treatment_decision)) {
    td <- design$treatment_decision
    for (k in c("treatment", "predictive")) {
      if (is.null(td[[k]])) stop(sprintf("design: 'treatment_decision' needs '%s'", k), call. = FALSE)
    }
    td$covariates <- as.character(unlist(td$covariates))
    td$thresholds <- as.numeric(unlist(td$thresholds %||% c(0, 0.02, 0.05)))
    td$time <- as.numeric(td$time %||% 60)
    design$treatment_decision <- td
  }
  if (!is.null(design$chemo_benefit)) {
    cb <- design$chemo_benefit
    if (is.null(cb$treatment)) stop("design: 'chemo_benefit' needs 'treatment'", call. = FALSE)
    cb$dose_cut <- as.numeric(cb$dose_cut %||% 160)
    design$chemo_benefit <- cb
  }
  structure(design, class = c("deepnomo_design", "list"))
}

#' @method print deepnomo_design
#' @export
print.deepnomo_design <- function(x, ...) {
  cat(sprintf("Study design '%s': endpoint %s; train '%s', test %s\n", x$study, x$endpoint,
              x$cohorts$train, paste(sprintf("'%s'", x$cohorts$test), collapse = ", ")))
  cat(sprintf("  candidates: %s (selection: %s)\n", paste(x$candidates, collapse = ", "), x$selection))
  cat(sprintf("  signatures: %s\n", paste(x$signatures, collapse = ", ")))
  for (m in names(x$models)) {
    terms <- x$models[[m]]
    what <- if (is.list(terms)) {
      sprintf("selected (%s) from %s", terms$method, paste(terms$select, collapse = ", "))
    } else {
      paste(terms, collapse = " + ")
    }
    cat(sprintf("  model %-12s %s\n", m, what))
  }
  cat(sprintf("  reference: %s; nomogram: %s; times: %s\n  analyses: %s\n", x$reference, x$nomogram,
              paste(x$times, collapse = ", "), paste(x$analyses, collapse = ", ")))
  invisible(x)
}

# --- internals ----------------------------------------------------------------

`%||%` <- function(a, b) if (is.null(a)) b else a

analysis_names <- function() {
  c("baseline", "univariate", "selection", "nomogram", "calibration", "cutpoint", "km", "td_roc",
    "subgroups", "treatment_decision", "chemo_benefit")
}

design_keys <- function() {
  list(study = NULL, description = NULL, seed = NULL, endpoint = NULL, secondary_endpoints = NULL,
       cohorts = c("train", "test"), candidates = NULL, selection = NULL, signatures = NULL,
       models = NULL, reference = NULL, nomogram = NULL, times = NULL,
       calibration = c("times", "groups", "B"), cutpoint = c("model", "minprop"),
       subgroups = c("by", "min_events"),
       treatment_decision = c("treatment", "prognostic", "predictive", "covariates", "time", "thresholds"),
       chemo_benefit = c("treatment", "reference", "dose", "dose_cut"),
       derived = NULL, impute_median = NULL, truth = c("imaging", "total"), analyses = NULL)
}

check_keys <- function(x, known, where) {
  unknown <- setdiff(names(x), known)
  if (length(unknown)) {
    stop(sprintf("%s: unknown key(s) [%s]; known: [%s]", where, paste(unknown, collapse = ", "),
                 paste(known, collapse = ", ")), call. = FALSE)
  }
  invisible(TRUE)
}

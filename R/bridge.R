#' Cohort tables: the bridge contract on the R side
#'
#' A cohort table has one row per patient: `patient_id` (unique), `cohort`
#' (e.g. `train`, `internal_test`, `external_test`), optionally `center` and
#' `treatment`, endpoint pairs `<name>_time` (months, >= 0) and
#' `<name>_event` (0/1), covariates typed by the manifest, and signatures
#' `sig_*` (numeric, higher = higher risk). The rules live in one schema file
#' (`bridge/cohort_schema.json` in the repository, installed with the
#' package) that the Python side reads as well.
#'
#' `validate_cohort()` refuses a table that breaks a rule with an error
#' naming the column and the first offending rows (1-based, with their
#' `patient_id`). `read_cohort()` reads `cohort.csv` and the manifest beside
#' it (`cohort.manifest.yaml` or `.json`), validates, and types the columns
#' (factors get the manifest's levels, in order). `write_cohort()` validates
#' and writes both files atomically.
#'
#' @param data A data frame, one row per patient.
#' @param manifest A list (parsed manifest) or a path to a YAML/JSON file.
#' @return `validate_cohort()`: invisibly, a list of column roles
#'   (`endpoints`, `signatures`, `covariates`, `truth`).
#' @examples
#' d <- data.frame(patient_id = c("a", "b"), cohort = "train",
#'                 os_time = c(10, 20), os_event = c(1L, 0L), sig_x = c(0.1, -1))
#' validate_cohort(d, list(endpoints = list(os = list(description = "overall survival"))))
#' @export
validate_cohort <- function(data, manifest) {
  if (!is.data.frame(data)) {
    stop("`data` must be a data frame, not ", class(data)[1], call. = FALSE)
  }
  manifest <- as_manifest(manifest)
  schema <- cohort_schema()
  if (nrow(data) == 0L) stop("cohort table: has no rows", call. = FALSE)

  for (col in names(schema$columns)) {
    rule <- schema$columns[[col]]
    if (!col %in% names(data)) {
      if (isTRUE(rule$required)) cohort_fail(col, "required column is missing")
      next
    }
    x <- data[[col]]
    if (!isTRUE(rule$missing) && anyNA(x)) {
      cohort_fail(col, "missing values are not allowed", data, is.na(x))
    }
    if (isTRUE(rule$unique)) {
      dup <- duplicated(x) | duplicated(x, fromLast = TRUE)
      if (any(dup)) cohort_fail(col, "values must be unique (duplicate patient_id)", data, dup)
    }
  }

  roles <- list(endpoints = character(), signatures = character(),
                covariates = character(), truth = character())
  for (col in names(data)) {
    for (pat in schema$patterns) {
      m <- regmatches(col, regexec(pat$regex, col))[[1]]
      if (length(m) == 0L) next
      x <- data[[col]]
      if (pat$role %in% c("signature", "truth")) {
        if (!is.numeric(x)) {
          cohort_fail(col, sprintf("%s columns must be numeric, found %s", pat$role, class(x)[1]))
        }
        key <- if (pat$role == "signature") "signatures" else "truth"
        roles[[key]] <- c(roles[[key]], col)
        break
      }
      stem <- m[2]
      partner <- paste0(stem, "_", pat$pair)
      if (!partner %in% names(data)) cohort_fail(col, sprintf("has no partner column '%s'", partner))
      if (!is.numeric(x) && !is.logical(x)) {
        cohort_fail(col, sprintf("must be numeric, found %s", class(x)[1]), data,
                    is.na(suppressWarnings(as.numeric(as.character(x)))))
      }
      x <- as.numeric(x)
      if (!isTRUE(pat$missing) && anyNA(x)) {
        cohort_fail(col, "missing values are not allowed", data, is.na(x))
      }
      if (!is.null(pat$minimum) && any(x < pat$minimum)) {
        cohort_fail(col, sprintf("must be >= %s (negative time)", pat$minimum), data,
                    x < pat$minimum)
      }
      if (any(!is.finite(x))) cohort_fail(col, "must be finite", data, !is.finite(x))
      if (!is.null(pat$allowed)) {
        bad <- !x %in% unlist(pat$allowed)
        if (any(bad)) {
          cohort_fail(col, sprintf("values must be in [%s]", paste(unlist(pat$allowed), collapse = ", ")),
                      data, bad)
        }
      }
      if (pat$role == "endpoint_time") roles$endpoints <- c(roles$endpoints, stem)
      break
    }
  }

  for (ep in names(manifest$endpoints)) {
    for (suffix in c("time", "event")) {
      col <- paste0(ep, "_", suffix)
      if (!col %in% names(data)) {
        cohort_fail(col, sprintf("required by manifest endpoint '%s' but missing", ep))
      }
    }
  }

  for (name in names(manifest$covariates)) {
    cov <- manifest$covariates[[name]]
    if (!name %in% names(data)) cohort_fail(name, "declared in the manifest but missing from the table")
    x <- data[[name]]
    present <- !is.na(x)
    if (cov$type == "numeric") {
      if (!is.numeric(x)) {
        cohort_fail(name, sprintf("numeric covariate has type %s", class(x)[1]), data,
                    present & is.na(suppressWarnings(as.numeric(as.character(x)))))
      }
    } else if (cov$type == "binary") {
      bad <- present & !(suppressWarnings(as.numeric(as.character(x))) %in% c(0, 1))
      if (any(bad)) cohort_fail(name, "binary covariate must be 0/1", data, bad)
    } else {
      levels <- as.character(unlist(cov$levels))
      bad <- present & !(as.character(x) %in% levels)
      if (any(bad)) {
        cohort_fail(name, sprintf("level '%s' is not among the manifest levels [%s]",
                                  as.character(x)[which(bad)[1]], paste(levels, collapse = ", ")),
                    data, bad)
      }
    }
    roles$covariates <- c(roles$covariates, name)
  }
  invisible(roles)
}

#' @rdname validate_cohort
#' @param file Path of the cohort CSV.
#' @param manifest_file Path of the manifest; by default `<stem>.manifest.yaml`
#'   (or `.json`) beside `file`.
#' @return `read_cohort()`: the typed data frame, with the manifest as
#'   attribute `"manifest"`.
#' @export
read_cohort <- function(file, manifest_file = NULL) {
  if (!is.character(file) || length(file) != 1L) stop("`file` must be one path", call. = FALSE)
  if (!file.exists(file)) stop("`file`: cannot read '", file, "': no such file", call. = FALSE)
  if (is.null(manifest_file)) manifest_file <- manifest_path_for(file)
  manifest <- as_manifest(manifest_file)
  read <- function(...) {
    tryCatch(utils::read.csv(file, stringsAsFactors = FALSE, check.names = FALSE,
                             na.strings = c("NA", ""), ...),
             error = function(e) {
               stop("`file`: cannot read '", file, "': ", conditionMessage(e), call. = FALSE)
             })
  }
  header <- names(read(nrows = 1L))
  text_cols <- intersect(c("patient_id", "cohort", "center"), header)
  data <- read(colClasses = stats::setNames(rep("character", length(text_cols)), text_cols))
  validate_cohort(data, manifest)
  data <- apply_manifest_types(data, manifest)
  attr(data, "manifest") <- manifest
  data
}

#' @rdname validate_cohort
#' @return `write_cohort()`: invisibly, the CSV path.
#' @export
write_cohort <- function(data, manifest, file) {
  manifest <- as_manifest(manifest)
  validate_cohort(data, manifest)
  dir.create(dirname(file), recursive = TRUE, showWarnings = FALSE)
  tmp <- tempfile(tmpdir = dirname(file), fileext = ".csv")
  utils::write.csv(data, tmp, row.names = FALSE, na = "NA")
  file.rename(tmp, file)
  mtmp <- tempfile(tmpdir = dirname(file), fileext = ".yaml")
  yaml::write_yaml(manifest, mtmp)
  file.rename(mtmp, sub("\\.csv$", ".manifest.yaml", file))
  invisible(file)
}

# --- internals ---------------------------------------------------------------

cohort_schema <- function() {
  path <- system.file("schema", "cohort_schema.json", package = "deepnomo")
  if (!nzchar(path)) {
    stop("the cohort schema is not installed with deepnomo; reinstall with `make setup`",
         call. = FALSE)
  }
  jsonlite::fromJSON(path, simplifyVector = FALSE)
}

manifest_path_for <- function(file) {
  stem <- sub("\\.csv$", "", file)
  for (ext in c(".manifest.yaml", ".manifest.yml", ".manifest.json")) {
    if (file.exists(paste0(stem, ext))) return(paste0(stem, ext))
  }
  stop("`manifest_file`: no manifest beside '", file, "' (expected ", stem, ".manifest.yaml)",
       call. = FALSE)
}

as_manifest <- function(manifest) {
  if (is.character(manifest) && length(manifest) == 1L) {
    if (!file.exists(manifest)) stop("`manifest`: cannot read '", manifest, "'", call. = FALSE)
    manifest <- if (grepl("\\.json$", manifest)) {
      jsonlite::fromJSON(manifest, simplifyVector = FALSE)
    } else {
      yaml::read_yaml(manifest)
    }
  }
  if (!is.list(manifest)) stop("`manifest` must be a list or a path", call. = FALSE)
  spec <- cohort_schema()$manifest
  unknown <- setdiff(names(manifest), names(spec$keys))
  if (length(unknown)) {
    stop(sprintf("manifest: unknown key(s) [%s]; known: [%s]", paste(unknown, collapse = ", "),
                 paste(names(spec$keys), collapse = ", ")), call. = FALSE)
  }
  for (key in unlist(spec$required)) {
    if (is.null(manifest[[key]]) || length(manifest[[key]]) == 0L) {
      stop(sprintf("manifest: required key '%s' is missing or empty", key), call. = FALSE)
    }
  }
  types <- unlist(cohort_schema()$covariate_types)
  for (name in names(manifest$covariates)) {
    type <- manifest$covariates[[name]]$type
    if (is.null(type) || !type %in% types) {
      stop(sprintf("manifest: covariate '%s' has type '%s'; expected one of [%s]", name,
                   format(type), paste(types, collapse = ", ")), call. = FALSE)
    }
    if (type %in% c("factor", "ordered") && length(manifest$covariates[[name]]$levels) == 0L) {
      stop(sprintf("manifest: covariate '%s' of type %s needs 'levels'", name, type), call. = FALSE)
    }
  }
  manifest
}

apply_manifest_types <- function(data, manifest) {
  for (col in grep("_event$", names(data), value = TRUE)) data[[col]] <- as.integer(data[[col]])
  for (name in names(manifest$covariates)) {
    cov <- manifest$covariates[[name]]
    if (cov$type %in% c("factor", "ordered")) {
      data[[name]] <- factor(as.character(data[[name]]), levels = as.character(unlist(cov$levels)),
                             ordered = cov$type == "ordered")
    }
  }
  data
}

cohort_fail <- function(column, problem, data = NULL, bad = NULL) {
  where <- ""
  if (!is.null(data) && !is.null(bad)) {
    idx <- which(bad)
    shown <- utils::head(idx, 5L)
    labels <- if ("patient_id" %in% names(data)) {
      sprintf("%d (%s)", shown, as.character(data$patient_id[shown]))
    } else {
      as.character(shown)
    }
    more <- if (length(idx) > length(shown)) sprintf(" and %d more", length(idx) - length(shown)) else ""
    where <- paste0("; rows ", paste(labels, collapse = ", "), more)
  }
  stop(sprintf("cohort table, column '%s': %s%s", column, problem, where), call. = FALSE)
}

pbc_model <- function() {
  d <- survival::pbc[1:312, ]
  d$os_time <- d$time / 30.44
  d$os_event <- as.integer(d$status == 2)
  d$edema <- factor(d$edema, c(0, 0.5, 1), c("none", "untreated", "treated"))
  d$sex <- factor(d$sex)
  suppressMessages(select_cox(d, "os", c("age", "bili", "albumin", "edema", "sex"),
                              method = "significant", p_enter = 0.2))
}

test_that("nomogram_score equals rms::survest and predict() on the model (pbc)", {
  sel <- pbc_model()
  expect_true(all(c("edema", "age", "bili") %in% sel$selected))
  nom <- build_nomogram(sel, times = c(36, 60))
  sc <- nomogram_score(nom, sel$data)
  se <- rms::survest(sel$fit, newdata = sel$data, times = c(36, 60))$surv
  expect_equal(sc$surv_36, unname(se[, 1]), tolerance = 1e-10)
  expect_equal(sc$surv_60, unname(se[, 2]), tolerance = 1e-10)
  expect_equal(sc$lp, unname(predict(sel$fit, sel$data, type = "lp")), tolerance = 1e-10)
  expect_equal(sc$total_points, unname(rowSums(sc[grep("^points_", names(sc))])))
  # rounded points (as read off the drawn nomogram) move the lp by at most 0.5 point each
  sr <- nomogram_score(nom, sel$data, round_points = TRUE)
  expect_true(all(abs(sr$lp - sc$lp) <= 0.5 * length(sel$selected) / nom$scale + 1e-12))
  expect_true(max(abs(sr$surv_60 - sc$surv_60)) < 0.05)
})

test_that("the points mappings are the rms nomogram axes", {
  sel <- pbc_model()
  nom <- build_nomogram(sel, times = 36)
  for (p in nom$predictors) {
    axis <- nom$nomogram[[p$name]]
    if (p$type == "numeric") {
      expect_equal(p$a + p$b * axis[[p$name]], unname(axis$points), tolerance = 1e-10)
      expect_equal(p$b, unname(coef(sel$fit)[p$name]) * attr(nom$nomogram, "info")$sc)
    } else {
      expect_equal(p$levels, as.character(axis[[p$name]]))
      expect_equal(p$points, unname(axis$points))
    }
  }
  widest <- max(vapply(nom$predictors, function(p) {
    if (p$type == "numeric") abs(p$b) * diff(p$range) else diff(range(p$points))
  }, numeric(1)))
  expect_equal(widest, 100)
  expect_equal(nom$baseline_surv, unname(rms::Survival(sel$fit)(36, 0)))
})

test_that("the JSON spec recomputes the scores without rms", {
  sel <- pbc_model()
  nom <- build_nomogram(sel, times = c(36, 60))
  f <- tempfile(fileext = ".json")
  nomogram_spec(nom, file = f)
  spec <- jsonlite::fromJSON(f, simplifyVector = FALSE)
  nd <- sel$data[1:25, ]
  total <- numeric(nrow(nd))
  for (p in spec$predictors) {
    x <- nd[[p$name]]
    total <- total + if (p$type == "numeric") p$a + p$b * x else
      unlist(p$points)[match(as.character(x), unlist(p$levels))]
  }
  lp <- spec$total_points_to_lp$intercept + spec$total_points_to_lp$slope * total
  s0 <- unlist(spec$baseline_survival$s0)
  surv <- sapply(s0, function(s) s^exp(lp))
  expect_equal(unname(surv), unname(rms::survest(sel$fit, newdata = nd, times = c(36, 60))$surv),
               tolerance = 1e-10)
  unlink(f)
})

test_that("plot draws the nomogram; save_figure writes PNG and PDF", {
  sel <- pbc_model()
  nom <- build_nomogram(sel)
  stem <- file.path(tempfile("nomo"), "nomogram")
  paths <- save_figure(function() plot(nom), stem, width = 7, height = 5)
  expect_equal(paths, paste0(stem, c(".png", ".pdf")))
  expect_equal(readBin(paths[1], "raw", 4), as.raw(c(0x89, 0x50, 0x4e, 0x47)))
  expect_equal(rawToChar(readBin(paths[2], "raw", 4)), "%PDF")
  expect_error(save_figure(42, stem), "`plot` must be")
})

test_that("bad input: unknown level, missing predictor, times past follow-up, transforms", {
  sel <- pbc_model()
  nom <- build_nomogram(sel)
  nd <- sel$data[1:3, ]
  nd$edema <- as.character(nd$edema)
  nd$edema[2] <- "severe"
  expect_error(nomogram_score(nom, nd), "`edema` has level\\(s\\) severe")
  expect_error(nomogram_score(nom, sel$data[, c("age", "bili")]), "lacks predictor column")
  expect_error(build_nomogram(sel, times = 500), "beyond the last follow-up")
  d <- sel$data
  dd <- rms::datadist(d)
  options(datadist = dd)
  on.exit(options(datadist = NULL))
  fit <- rms::cph(survival::Surv(os_time, os_event) ~ age + log(bili), data = d, x = TRUE,
                  y = TRUE, surv = TRUE)
  expect_error(build_nomogram(fit), "log\\(bili\\).*not plain linear")
})

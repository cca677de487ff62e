# Figure conventions shared by every plotting function of the package.

#' ggplot2 theme for deepnomo figures
#'
#' A restrained black-and-white theme sized for a journal column: 9 pt base
#' text, no minor grid lines, legend at the bottom, bold titles. All plotting
#' functions of the package add it; add it to your own figures to match.
#'
#' @param base_size Base font size in points.
#' @param base_family Font family.
#' @return A [ggplot2::theme()] object.
#' @examples
#' library(ggplot2)
#' ggplot(data.frame(x = 1:3, y = 1:3), aes(x, y)) + geom_point() + theme_deepnomo()
#' @export
theme_deepnomo <- function(base_size = 9, base_family = "") {
  ggplot2::theme_bw(base_size = base_size, base_family = base_family) +
    ggplot2::theme(
      panel.grid.minor = ggplot2::element_blank(),
      panel.grid.major = ggplot2::element_line(colour = "grey90", linewidth = 0.3),
      legend.position = "bottom",
      legend.key.size = ggplot2::unit(0.8, "lines"),
      strip.background = ggplot2::element_rect(fill = "grey95", colour = NA),
      plot.title = ggplot2::element_text(face = "bold", size = ggplot2::rel(1.1)),
      axis.title = ggplot2::element_text(size = ggplot2::rel(1))
    )
}

#' Save a figure as PNG and PDF
#'
#' Writes `<stem>.png` (at `dpi`) and `<stem>.pdf` for a ggplot object, a
#' [survminer::ggsurvplot()] object (curves and risk table, printed into each
#' device) or an arrangement of them ([survminer::arrange_ggsurvplots()]
#' with `print = FALSE`; its first page), or a function that draws with base graphics (called with no
#' arguments inside each device). Each file is written to a temporary name in the same folder
#' and renamed, so a crash never leaves a half-written figure.
#'
#' @param plot A ggplot, `ggsurvplot` or `arrangelist` object, or a function
#'   with no arguments that draws.
#' @param file Output path; an extension `.png` or `.pdf` is dropped and both
#'   files are written. Missing folders are created.
#' @param width,height Size in inches (default: one journal column, 3.5 x 3).
#' @param dpi Resolution of the PNG.
#' @return Invisibly, the two paths written.
#' @examples
#' p <- ggplot2::ggplot(data.frame(x = 1:3, y = 1:3), ggplot2::aes(x, y)) +
#'   ggplot2::geom_line()
#' save_figure(p, file.path(tempdir(), "line"))
#' @export
save_figure <- function(plot, file, width = 3.5, height = 3, dpi = 300) {
  if (!inherits(plot, c("ggplot", "ggsurvplot", "arrangelist")) && !is.function(plot)) {
    stop("save_figure(): `plot` must be a ggplot, ggsurvplot or arrangelist object or a ",
         "drawing function, not ",
         class(plot)[1], call. = FALSE)
  }
  if (!is.character(file) || length(file) != 1L || !nzchar(file)) {
    stop("save_figure(): `file` must be one non-empty path", call. = FALSE)
  }
  for (arg in c("width", "height", "dpi")) {
    v <- get(arg)
    if (!is.numeric(v) || length(v) != 1L || !is.finite(v) || v <= 0) {
      stop(sprintf("save_figure(): `%s` must be one positive number", arg), call. = FALSE)
    }
  }
  stem <- sub("\\.(png|pdf)$", "", file, ignore.case = TRUE)
  dir.create(dirname(stem), recursive = TRUE, showWarnings = FALSE)
  paths <- c(png = paste0(stem, ".png"), pdf = paste0(stem, ".pdf"))
  for (type in names(paths)) {
    tmp <- tempfile(pattern = ".tmp_fig_", tmpdir = dirname(stem), fileext = paste0(".", type))
    if (type == "png") {
      grDevices::png(tmp, width = width, height = height, units = "in", res = dpi)
    } else {
      grDevices::pdf(tmp, width = width, height = height)
    }
    ok <- FALSE
    tryCatch({
      if (inherits(plot, "ggplot")) {
        print(plot)
      } else if (inherits(plot, "ggsurvplot")) {
        print(plot, newpage = FALSE)
      } else if (inherits(plot, "arrangelist")) {
        grid::grid.draw(plot[[1]])
      } else {
        plot()
      }
      ok <- TRUE
    }, finally = {
      grDevices::dev.off()
      if (!ok) unlink(tmp)
    })
    if (!file.rename(tmp, paths[[type]])) {
      unlink(tmp)
      stop("save_figure(): could not write ", paths[[type]], call. = FALSE)
    }
  }
  invisible(unname(paths))
}

#' @importFrom ggplot2 .data
NULL

// SPDX-License-Identifier: MIT
// A minimal SVG line chart for the demo's learning curves (no dependency): panels side by side
// sharing an x axis of epochs, each with mean curves and shaded min–max bands, one legend on top.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace demo {

struct Series {
  std::string label, color;
  std::vector<double> mean, lo, hi;  // one value per epoch
};

struct Panel {
  std::string title, y_label;
  std::vector<Series> series;
  double y_min, y_max;  // axis range
};

namespace svg {

inline std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

inline std::string escape(const std::string& s) {
  std::string out;
  for (char c : s)
    out += c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : std::string(1, c);
  return out;
}

inline std::string text(double x, double y, const std::string& s, int size,
                        const char* anchor = "middle", const std::string& extra = "") {
  return "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + std::to_string(size) +
         "\" text-anchor=\"" + anchor + "\"" + extra + ">" + escape(s) + "</text>\n";
}

inline std::string line(double x1, double y1, double x2, double y2, const std::string& style) {
  return "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" +
         num(y2) + "\" " + style + "/>\n";
}

// A tick step of 1, 2 or 5 × 10^k giving about five ticks over span.
inline double tick_step(double span) {
  const double raw = span / 5.0, mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * mag >= raw) return m * mag;
  return 10.0 * mag;
}

inline std::string tick_label(double v, double step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", step < 1.0 ? (step < 0.1 ? 2 : 1) : 0, v);
  return buf;
}

// One panel in the box (x0, y0, w, h): grid, axes, ticks, bands, curves.
inline std::string panel(const Panel& p, double x0, double y0, double w, double h) {
  const size_t epochs = p.series.front().mean.size();
  auto px = [&](double epoch) { return x0 + w * (epoch - 1) / std::max<double>(epochs - 1, 1); };
  auto py = [&](double v) { return y0 + h * (p.y_max - v) / (p.y_max - p.y_min); };
  std::string s = text(x0 + w / 2, y0 - 10, p.title, 14, "middle", " font-weight=\"bold\"");
  const double ys = tick_step(p.y_max - p.y_min);
  for (double v = std::ceil(p.y_min / ys) * ys; v <= p.y_max + 1e-9; v += ys) {
    s += line(x0, py(v), x0 + w, py(v), "stroke=\"#ddd\"");
    s += text(x0 - 6, py(v) + 4, tick_label(v, ys), 11, "end");
  }
  const double xs = std::max(1.0, tick_step(static_cast<double>(epochs - 1)));
  for (double e = xs > 1 ? 0 : 1; e <= static_cast<double>(epochs) + 1e-9; e += xs) {
    const double at = std::max(e, 1.0);  // epoch 1, then multiples of the step
    s += line(px(at), y0 + h, px(at), y0 + h + 4, "stroke=\"#333\"");
    s += text(px(at), y0 + h + 17, tick_label(at, xs), 11);
  }
  s += "<rect x=\"" + num(x0) + "\" y=\"" + num(y0) + "\" width=\"" + num(w) + "\" height=\"" +
       num(h) + "\" fill=\"none\" stroke=\"#333\"/>\n";
  s += text(x0 + w / 2, y0 + h + 36, "epoch", 12);
  s += text(x0 - 44, y0 + h / 2, p.y_label, 12, "middle",
            " transform=\"rotate(-90 " + num(x0 - 44) + " " + num(y0 + h / 2) + ")\"");
  for (const Series& c : p.series) {
    std::string band, curve;
    for (size_t i = 0; i < epochs; i++) {
      band += num(px(i + 1.0)) + "," + num(py(c.hi[i])) + " ";
      curve += num(px(i + 1.0)) + "," + num(py(c.mean[i])) + " ";
    }
    for (size_t i = epochs; i-- > 0;) band += num(px(i + 1.0)) + "," + num(py(c.lo[i])) + " ";
    s += "<polygon points=\"" + band + "\" fill=\"" + c.color + "\" fill-opacity=\"0.18\"/>\n";
    s += "<polyline points=\"" + curve + "\" fill=\"none\" stroke=\"" + c.color +
         "\" stroke-width=\"2.5\"/>\n";
  }
  return s;
}

}  // namespace svg

// Writes panels side by side under a title, a subtitle and a legend (taken from the first
// panel's series; all panels must have the same series).
inline void write_svg(const std::string& path, const std::string& title,
                      const std::string& subtitle, const std::vector<Panel>& panels) {
  const double panel_w = 380, panel_h = 260, left = 80, gap = 110, top = 120;
  const double width = left + panels.size() * (panel_w + gap) - gap + 30,
               height = top + panel_h + 60;
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + svg::num(width) +
                  "\" height=\"" + svg::num(height) + "\" viewBox=\"0 0 " + svg::num(width) + " " +
                  svg::num(height) + "\" font-family=\"Helvetica, Arial, sans-serif\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += svg::text(width / 2, 26, title, 17, "middle", " font-weight=\"bold\"");
  s += svg::text(width / 2, 48, subtitle, 12, "middle", " fill=\"#444\"");
  // Legend entries side by side, centred; text widths estimated at 0.6 em per character.
  const std::string note = "shaded: min–max over seeds";
  auto entry_w = [](const Series& c) { return 34 + 0.6 * 13 * c.label.size() + 36; };
  double x = width / 2 - 0.6 * 12 * note.size() / 2;
  for (const Series& c : panels.front().series) x -= entry_w(c) / 2;
  for (const Series& c : panels.front().series) {
    s += svg::line(x, 70, x + 28, 70, "stroke=\"" + c.color + "\" stroke-width=\"2.5\"");
    s += svg::text(x + 34, 74, c.label, 13, "start");
    x += entry_w(c);
  }
  s += svg::text(x, 74, note, 12, "start", " fill=\"#666\"");
  for (size_t i = 0; i < panels.size(); i++)
    s += svg::panel(panels[i], left + i * (panel_w + gap), top, panel_w, panel_h);
  s += "</svg>\n";
  std::ofstream out(path);
  out << s;
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace demo

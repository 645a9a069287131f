//! A uPlot chart sized to its container. uPlot draws on a canvas, so it works under a
//! strict CSP (no inline scripts, no eval); its styles come from the bundled CSS.

import { useEffect, useRef } from 'react';
import uPlot, { type AlignedData, type Options } from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface ChartProps {
  /** Options without width/height: the chart fills its container's width. */
  options: Omit<Options, 'width' | 'height'>;
  data: AlignedData;
  height?: number;
  testid?: string;
  /** Extra data attributes (the e2e test reads the point count and last time). */
  attrs?: Record<string, string | number>;
}

export function Chart({ options, data, height = 180, testid, attrs }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const latest = useRef(data);
  latest.current = data;

  // Rebuild when the options change (series, axes, locale).
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = Math.max(200, el.clientWidth);
    const p = new uPlot({ ...options, width, height } as Options, latest.current, el);
    plot.current = p;
    const ro = new ResizeObserver(() => {
      const w = Math.max(200, el.clientWidth);
      if (Math.abs(w - p.width) > 2) p.setSize({ width: w, height });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      p.destroy();
      plot.current = null;
    };
  }, [options, height]);

  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);

  const dataAttrs: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(attrs ?? {})) dataAttrs[`data-${k}`] = v;
  return <div className="chart" ref={box} data-testid={testid} {...dataAttrs} />;
}

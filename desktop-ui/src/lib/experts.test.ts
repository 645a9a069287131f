import { describe, expect, it } from 'vitest';
import { expertsByRank, heat, heatColour, imbalance, rankLoads, summarise } from './experts';

describe('heat', () => {
  it('scales each layer by its busiest expert', () => {
    expect(heat([[0, 5, 10], [0, 0, 0]])).toEqual([[0, 0.5, 1], [0, 0, 0]]);
  });
});

describe('imbalance', () => {
  it('is the busiest over the mean', () => {
    expect(imbalance([5, 14, 2, 2, 13, 2, 18, 12])).toBeCloseTo(18 / (68 / 8));
    expect(imbalance([3, 3, 3])).toBe(1);
  });
  it('is 1 with no load', () => {
    expect(imbalance([])).toBe(1);
    expect(imbalance([0, 0])).toBe(1);
  });
});

describe('rankLoads', () => {
  it('sums each rank’s experts', () => {
    // 4 experts on 2 ranks, 2 slots each.
    expect(rankLoads([0, 1, 2, 3], [1, 2, 3, 4], 2, 2)).toEqual([3, 7]);
  });

  it('splits a replicated expert’s load between its copies', () => {
    // Expert 3 is hot and has a copy on each rank.
    expect(rankLoads([0, 3, 1, 3], [2, 2, 0, 10], 2, 2)).toEqual([7, 7]);
  });

  it('puts everything on rank 0 without a placement', () => {
    expect(rankLoads([], [1, 2], 0, 1)).toEqual([3]);
  });
});

describe('expertsByRank and summarise', () => {
  it('lists experts per rank and each layer’s imbalance', () => {
    expect(expertsByRank([0, 1, 2, 3], 2, 2)).toEqual([[0, 1], [2, 3]]);
    const s = summarise([[0, 1, 2, 3]], [[1, 2, 3, 4]], 2, 2);
    expect(s).toEqual([{ layer: 0, rank_loads: [3, 7], imbalance: 7 / 5, hottest: 3 }]);
    expect(summarise([[0, 1]], [[0, 0]], 1, 2)[0].hottest).toBeNull();
  });
});

describe('heatColour', () => {
  it('clamps and goes from pale to deep', () => {
    expect(heatColour(0)).toBe('hsl(190 80% 94%)');
    expect(heatColour(1)).toBe('hsl(20 80% 50%)');
    expect(heatColour(7)).toBe(heatColour(1));
    expect(heatColour(Number.NaN)).toBe(heatColour(0));
  });
});

//! What the Models screen needs to know about a catalog model's kind.

import type { CatalogModel } from '../api/types';

/** The catalog format of an embedding model (the daemon's `EMBEDDING_FORMAT`). */
export const EMBEDDING_FORMAT = 'sentence-transformers';

/** Whether `m` is an embedding model (served by `POST /v1/embeddings`, on the CPU). */
export function isEmbedding(m: Pick<CatalogModel, 'format'>): boolean {
  return m.format === EMBEDDING_FORMAT;
}

/**
 * The catalog models a deployment serving `current` can swap to: those of the same kind
 * (a chat deployment swaps to a chat model, an embedding one to an embedding model; the
 * clients of a name expect one endpoint). With `current` unknown, every model.
 */
export function swapTargets(models: CatalogModel[], current: string): CatalogModel[] {
  const now = models.find((m) => m.id === current);
  if (!now) return models;
  return models.filter((m) => isEmbedding(m) === isEmbedding(now));
}

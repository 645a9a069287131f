import { describe, expect, it } from 'vitest';
import type { CatalogModel } from '../api/types';
import { isEmbedding, swapTargets } from './models';

const model = (id: string, format: string): CatalogModel => ({
  id,
  name: id,
  format,
  architecture: format === 'sentence-transformers' ? 'bert' : 'llama',
  parameters: 1,
  context_length: 256,
  digest: 'sha256:00',
  size_bytes: 1,
  path: `/m/${id}`,
  in_store: true,
  license: null,
  added_at: 0,
  deployed_as: [],
});

describe('models', () => {
  const all = [model('smol', 'gguf'), model('minilm', 'sentence-transformers'), model('moe', 'safetensors'), model('bge', 'sentence-transformers')];

  it('tells an embedding model by its format', () => {
    expect(all.map(isEmbedding)).toEqual([false, true, false, true]);
  });

  it('swaps a deployment only to a model of its kind', () => {
    expect(swapTargets(all, 'smol').map((m) => m.id)).toEqual(['smol', 'moe']);
    expect(swapTargets(all, 'minilm').map((m) => m.id)).toEqual(['minilm', 'bge']);
    expect(swapTargets(all, 'gone')).toHaveLength(4);
  });
});

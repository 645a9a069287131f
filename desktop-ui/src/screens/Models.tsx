//! Models: the catalog with each model's fit on this box, importing a model by its path on
//! the box (with a live progress bar), and deploying, swapping, undeploying and deleting.

import { useCallback, useEffect, useRef, useState } from 'react';
import { jobIsFinal, watchJob, type BoxApi } from '../api/client';
import { ApiError } from '../api/errors';
import type { CatalogModel, DeploymentView, FitAnswer, JobView } from '../api/types';
import { useApi } from '../connection';
import { useI18n } from '../i18n';
import { usePoll } from '../lib/usePoll';
import { isEmbedding, swapTargets } from '../lib/models';
import { Async, Card, Empty, ErrorBox } from '../components/States';
import { Badge, ConfirmButton } from '../components/Widgets';

export function Models() {
  const { t } = useI18n();
  const api = useApi();
  const catalog = usePoll(() => api.models(), 10000, [api]);
  const deployments = usePoll(() => api.deployments(), 5000, [api]);
  const [actionError, setActionError] = useState<unknown>(null);

  const refresh = useCallback(() => {
    catalog.reload();
    deployments.reload();
  }, [catalog, deployments]);

  const act = async (f: () => Promise<unknown>) => {
    setActionError(null);
    try {
      await f();
    } catch (e) {
      setActionError(e);
    } finally {
      refresh();
    }
  };

  return (
    <div>
      <h1>{t('models.title')}</h1>
      <Import api={api} onReady={refresh} />
      {actionError ? <ErrorBox error={actionError} /> : null}
      <Card title={t('models.catalog')} testid="catalog">
        <Async {...catalog} retry={catalog.reload}>
          {(c) =>
            c.data.length === 0 ? (
              <Empty>{t('models.emptyCatalog')}</Empty>
            ) : (
              <table className="table">
                <thead>
                  <tr>
                    <th>{t('models.id')}</th>
                    <th>{t('models.architecture')}</th>
                    <th className="num">{t('models.parameters')}</th>
                    <th className="num">{t('models.size')}</th>
                    <th className="num">{t('models.context')}</th>
                    <th>{t('models.fit')}</th>
                    <th>{t('models.deployedAs')}</th>
                    <th>{t('models.actions')}</th>
                  </tr>
                </thead>
                <tbody>
                  {c.data.map((m) => (
                    <CatalogRow key={m.id} m={m} api={api} act={act} />
                  ))}
                </tbody>
              </table>
            )
          }
        </Async>
      </Card>
      <Card title={t('models.deployments')} testid="deployments">
        <Async {...deployments} retry={deployments.reload}>
          {(d) =>
            d.data.length === 0 ? (
              <Empty>{t('models.noDeployments')}</Empty>
            ) : (
              <table className="table">
                <thead>
                  <tr>
                    <th>{t('deploy.name')}</th>
                    <th>{t('deploy.model')}</th>
                    <th>{t('deploy.state')}</th>
                    <th className="num">{t('deploy.ranks')}</th>
                    <th className="num">{t('overview.running')}</th>
                    <th className="num">{t('overview.waiting')}</th>
                    <th>{t('models.swap')}</th>
                    <th>{t('models.actions')}</th>
                  </tr>
                </thead>
                <tbody>
                  {d.data.map((x) => (
                    <DeploymentRow key={x.name} d={x} models={catalog.data?.data ?? []} api={api} act={act} />
                  ))}
                </tbody>
              </table>
            )
          }
        </Async>
      </Card>
    </div>
  );
}

function CatalogRow({ m, api, act }: { m: CatalogModel; api: BoxApi; act: (f: () => Promise<unknown>) => Promise<void> }) {
  const { t, num, bytes, compact, dateTime } = useI18n();
  const [name, setName] = useState(m.id);
  const deployedKey = m.deployed_as.join(',');
  return (
    <tr data-testid={`model-row-${m.id}`} data-deployed={m.deployed_as.length > 0}>
      <td>
        <strong>{m.id}</strong>
        <div className="muted small" title={m.path}>
          {m.name} · {m.format} · {dateTime(m.added_at * 1000)}
        </div>
      </td>
      <td>{m.architecture}</td>
      <td className="num">{compact(m.parameters)}</td>
      <td className="num">{bytes(m.size_bytes)}</td>
      <td className="num">{num(m.context_length)}</td>
      <td>
        {isEmbedding(m) ? (
          <span data-testid={`fit-${m.id}`} data-fits="embedding" title={t('models.embeddingsHint')}>
            <Badge kind="info">{t('models.embeddings')}</Badge>
          </span>
        ) : (
          <Fit api={api} id={m.id} served={m.deployed_as[0] ?? null} key={deployedKey} />
        )}
      </td>
      <td>
        {m.deployed_as.length === 0 ? (
          <span className="muted">{t('models.notDeployed')}</span>
        ) : (
          m.deployed_as.map((d) => (
            <Badge key={d} kind="ok">
              {d}
            </Badge>
          ))
        )}
      </td>
      <td className="actions">
        <form
          className="inline"
          onSubmit={(e) => {
            e.preventDefault();
            act(() => api.deploy(m.id, name.trim() || null));
          }}
        >
          <input
            className="narrow"
            data-testid={`deploy-name-${m.id}`}
            value={name}
            aria-label={t('deploy.name')}
            onChange={(e) => setName(e.target.value)}
          />
          <button type="submit" className="small primary" data-testid={`deploy-${m.id}`}>
            {t('models.deploy')}
          </button>
        </form>
        <ConfirmButton testid={`delete-${m.id}`} disabled={m.deployed_as.length > 0} onConfirm={() => act(() => api.deleteModel(m.id))}>
          {t('action.delete')}
        </ConfirmButton>
      </td>
    </tr>
  );
}

/**
 * The fit estimate: by the deployed name when there is one, else by the catalog id (the
 * daemon sizes a catalog model from its files before it is deployed; an older daemon
 * answers 404 there, shown as "estimated once deployed").
 */
function Fit({ api, id, served }: { api: BoxApi; id: string; served: string | null }) {
  const { t, bytes, num } = useI18n();
  const [fit, setFit] = useState<FitAnswer | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    let alive = true;
    api
      .fit(served ?? id)
      .then((f) => alive && setFit(f))
      .catch((e) => alive && setError(e));
    return () => {
      alive = false;
    };
  }, [api, id, served]);
  if (fit)
    return (
      <div data-testid={`fit-${id}`} data-fits={fit.fit.fits} title={fit.fit.summary}>
        <Badge kind={fit.fit.fits ? 'ok' : 'bad'}>{fit.fit.fits ? t('fit.fits') : t('fit.doesNotFit')}</Badge>
        <div className="small">
          {t('fit.detail', {
            ranks: num(fit.fit.ranks),
            seqs: num(fit.fit.sequences),
            ctx: num(fit.fit.context_tokens),
            weights: bytes(fit.fit.weights_bytes_per_rank),
          })}
        </div>
      </div>
    );
  if (error) {
    const notServed = error instanceof ApiError && error.status === 404 && !served;
    return (
      <span className="muted small" data-testid={`fit-${id}`} data-fits="unknown" title={error instanceof Error ? error.message : ''}>
        {notServed ? t('fit.afterDeploy') : error instanceof Error ? error.message : String(error)}
      </span>
    );
  }
  return <span className="muted small">{t('state.loading')}</span>;
}

function DeploymentRow({
  d,
  models,
  api,
  act,
}: {
  d: DeploymentView;
  models: CatalogModel[];
  api: BoxApi;
  act: (f: () => Promise<unknown>) => Promise<void>;
}) {
  const { t, te, num } = useI18n();
  const [target, setTarget] = useState(d.model);
  return (
    <tr data-testid={`deployment-row-${d.name}`} data-state={d.state}>
      <td>
        <strong>{d.name}</strong>
      </td>
      <td>{d.model}</td>
      <td>
        <Badge kind={d.state === 'ready' ? 'ok' : 'bad'}>{te('deployState', d.state)}</Badge>
        {d.error && <div className="bad-text small">{d.error}</div>}
      </td>
      <td className="num">{num(d.engine?.ranks)}</td>
      <td className="num">{num(d.engine?.running)}</td>
      <td className="num">{num(d.engine?.waiting)}</td>
      <td>
        <span className="inline">
          <select value={target} onChange={(e) => setTarget(e.target.value)} data-testid={`swap-model-${d.name}`} aria-label={t('models.swapTo')}>
            {swapTargets(models, d.model).map((m) => (
              <option key={m.id} value={m.id}>
                {m.id}
              </option>
            ))}
          </select>
          <button className="small" disabled={target === d.model} data-testid={`swap-${d.name}`} onClick={() => act(() => api.swap(d.name, target))}>
            {t('models.swap')}
          </button>
        </span>
      </td>
      <td>
        <ConfirmButton testid={`undeploy-${d.name}`} onConfirm={() => act(() => api.undeploy(d.name))}>
          {t('models.undeploy')}
        </ConfirmButton>
      </td>
    </tr>
  );
}

/** The import form and the progress of every import job not yet seen to its end. */
function Import({ api, onReady }: { api: BoxApi; onReady: () => void }) {
  const { t } = useI18n();
  const [path, setPath] = useState('');
  const [name, setName] = useState('');
  const [inPlace, setInPlace] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [jobs, setJobs] = useState<Map<string, JobView>>(new Map());
  const watching = useRef(new Map<string, AbortController>());
  const onReadyRef = useRef(onReady);
  onReadyRef.current = onReady;

  const follow = useCallback(
    (job: JobView) => {
      setJobs((m) => new Map(m).set(job.id, job));
      if (jobIsFinal(job) || watching.current.has(job.id)) return;
      const ctl = new AbortController();
      watching.current.set(job.id, ctl);
      watchJob(
        api,
        job.id,
        (j) => {
          setJobs((m) => new Map(m).set(j.id, j));
          if (j.state === 'ready') onReadyRef.current();
        },
        ctl.signal,
      ).catch(() => {
        // The job is gone (daemon restarted): its last state stays shown.
      });
    },
    [api],
  );

  // Jobs already running when the screen opens.
  useEffect(() => {
    api
      .jobs()
      .then((l) => l.data.filter((j) => !jobIsFinal(j)).forEach(follow))
      .catch(() => {});
    const w = watching.current;
    return () => {
      w.forEach((c) => c.abort());
      w.clear();
    };
  }, [api, follow]);

  const submit = async () => {
    setBusy(true);
    setError(null);
    try {
      const job = await api.importModel(path.trim(), name.trim() || null, inPlace);
      follow(job);
      setName('');
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  const list = [...jobs.values()].sort((a, b) => b.created_at - a.created_at);
  return (
    <Card title={t('import.title')} testid="import">
      <form
        className="form row-form"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <label className="grow">
          {t('import.path')}
          <input data-testid="import-path" value={path} placeholder="/var/lib/oasis/models/model.gguf" onChange={(e) => setPath(e.target.value)} />
        </label>
        <label>
          {t('import.name')}
          <input data-testid="import-name" value={name} placeholder={t('import.namePlaceholder')} onChange={(e) => setName(e.target.value)} />
        </label>
        <label className="check">
          <input type="checkbox" checked={inPlace} onChange={(e) => setInPlace(e.target.checked)} /> {t('import.inPlace')}
        </label>
        <button type="submit" className="primary" data-testid="import-submit" disabled={busy || path.trim() === ''}>
          {t('import.submit')}
        </button>
      </form>
      <p className="hint">{t('import.hint')}</p>
      {error ? <ErrorBox error={error} /> : null}
      {list.length > 0 && (
        <ul className="jobs">
          {list.map((j) => (
            <JobProgress key={j.id} j={j} api={api} />
          ))}
        </ul>
      )}
    </Card>
  );
}

function JobProgress({ j, api }: { j: JobView; api: BoxApi }) {
  const { t, te, bytes, num } = useI18n();
  const pct = j.state === 'ready' ? 100 : j.bytes_total > 0 ? (100 * j.bytes_done) / j.bytes_total : 0;
  const [error, setError] = useState<unknown>(null);
  return (
    <li className={`job ${j.state}`} data-testid={`job-${j.id}`} data-model={j.model} data-state={j.state}>
      <div className="job-head">
        <strong>{j.model}</strong> <Badge kind={j.state === 'ready' ? 'ok' : j.state === 'failed' ? 'bad' : j.state === 'cancelled' ? 'none' : 'info'}>{te('job', j.state)}</Badge>{' '}
        <span className="muted small">{j.source}</span>
      </div>
      <div className="progress" data-testid="job-progress" data-state={j.state} data-pct={Math.round(pct)} role="progressbar" aria-valuenow={Math.round(pct)} aria-valuemin={0} aria-valuemax={100}>
        <div className="progress-fill" style={{ width: `${pct}%` }} />
      </div>
      <div className="muted small">
        {bytes(j.bytes_done)} / {bytes(j.bytes_total)} ({num(pct, 0)}%)
        {!jobIsFinal(j) && j.rate_bytes_per_s > 0 && ` · ${bytes(j.rate_bytes_per_s)}/s`}
        {!jobIsFinal(j) && j.eta_s != null && ` · ${t('import.eta', { s: num(j.eta_s, 0) })}`}
      </div>
      {j.error && <div className="bad-text small">{j.error}</div>}
      {!jobIsFinal(j) && (
        <button
          className="small"
          onClick={() =>
            api.cancelJob(j.id).catch((e) => {
              setError(e);
            })
          }
        >
          {t('action.cancel')}
        </button>
      )}
      {error ? <ErrorBox error={error} compact /> : null}
    </li>
  );
}

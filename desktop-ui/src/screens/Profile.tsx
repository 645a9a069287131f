//! Hardware profile: which firmware profile the box runs under and why, and the compliance
//! report (pass / warn / fail per check, with the remedy), checked again on each visit.

import { useI18n } from '../i18n';
import { useApi } from '../connection';
import { usePoll } from '../lib/usePoll';
import { Async, Card, Empty } from '../components/States';
import { Badge, Stat } from '../components/Widgets';

const kind = (v: string) => (v === 'pass' ? 'ok' : v === 'warn' ? 'warn' : v === 'fail' ? 'bad' : 'none');

export function Profile() {
  const { t, te, num, dateTime } = useI18n();
  const api = useApi();
  const profile = usePoll(() => api.profile(), 30000, [api]);
  return (
    <div>
      <h1>{t('profile.title')}</h1>
      <Async {...profile} retry={profile.reload}>
        {(p) => {
          const r = p.report;
          if (!r) return <Empty>{t('profile.none')}</Empty>;
          const count = (v: string) => r.checks.filter((c) => c.verdict === v).length;
          return (
            <>
              <div className="stats">
                <Stat label={t('profile.profile')} value={r.profile_name} sub={r.profile} />
                <Stat label={t('profile.verdict')} value={<Badge kind={kind(r.verdict)} testid="profile-verdict">{te('verdict', r.verdict)}</Badge>} />
                <Stat label={te('verdict', 'pass')} value={num(count('pass'))} />
                <Stat label={te('verdict', 'warn')} value={num(count('warn'))} />
                <Stat label={te('verdict', 'fail')} value={num(count('fail'))} />
                <Stat label={t('profile.checkedAt')} value={dateTime(p.checked_at_ms)} />
              </div>
              {p.how && <p className="muted">{t('profile.how', { how: p.how })}</p>}
              <p className="muted small">{r.source}</p>
              <Card title={t('profile.checks')} testid="profile-checks">
                <table className="table">
                  <thead>
                    <tr>
                      <th>{t('profile.check')}</th>
                      <th>{t('profile.verdict')}</th>
                      <th>{t('profile.expected')}</th>
                      <th>{t('profile.found')}</th>
                      <th>{t('profile.remedy')}</th>
                    </tr>
                  </thead>
                  <tbody>
                    {[...r.checks]
                      .sort((a, b) => order(a.verdict) - order(b.verdict))
                      .map((c) => (
                        <tr key={c.id} data-testid="check-row" data-verdict={c.verdict} className={`verdict-${c.verdict}`}>
                          <td>
                            <code>{c.id}</code>
                          </td>
                          <td>
                            <Badge kind={kind(c.verdict)}>{te('verdict', c.verdict)}</Badge>
                          </td>
                          <td>{c.expected}</td>
                          <td>{c.found}</td>
                          <td className="small">{c.remedy ?? ''}</td>
                        </tr>
                      ))}
                  </tbody>
                </table>
              </Card>
            </>
          );
        }}
      </Async>
    </div>
  );
}

function order(v: string) {
  return v === 'fail' ? 0 : v === 'warn' ? 1 : v === 'pass' ? 2 : 3;
}

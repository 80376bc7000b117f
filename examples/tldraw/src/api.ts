// The export REST API of collab-server, as the Export menu uses it.
export type ExportFormat = 'json' | 'svg' | 'png' | 'pdf'

export interface ExportJob {
  id: string
  status: 'pending' | 'processing' | 'completed' | 'failed'
  url: string | null
  error: { code: string; detail: string } | null
}

function headers(token: string): HeadersInit {
  return { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }
}

async function json<T>(response: Response): Promise<T> {
  const body = await response.json()
  if (!response.ok) throw new Error(`${body.error}: ${body.detail}`)
  return body as T
}

/** Request an export and wait (polling) until it is completed or failed. */
export async function exportBoard(room: string, format: ExportFormat, token: string, onStatus: (job: ExportJob) => void): Promise<ExportJob> {
  const created = await json<ExportJob>(
    await fetch(`/api/rooms/${encodeURIComponent(room)}/exports`, { method: 'POST', headers: headers(token), body: JSON.stringify({ format }) }),
  )
  let job = created
  while (job.status === 'pending' || job.status === 'processing') {
    onStatus(job)
    await new Promise((resolve) => setTimeout(resolve, 500))
    job = await json<ExportJob>(await fetch(`/api/exports/${job.id}`, { headers: headers(token) }))
  }
  onStatus(job)
  return job
}

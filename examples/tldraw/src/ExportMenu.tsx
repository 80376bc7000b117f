import { useState } from 'react'
import { exportBoard, type ExportFormat, type ExportJob } from './api'

const FORMATS: ExportFormat[] = ['png', 'svg', 'pdf', 'json']

/** Export buttons: each asks the server for an export, shows its progress and downloads the file when done. */
export function ExportMenu({ room, token }: { room: string; token: string }) {
  const [status, setStatus] = useState<string>('')
  const run = async (format: ExportFormat) => {
    try {
      const job = await exportBoard(room, format, token, (j: ExportJob) => setStatus(`${format}: ${j.status}`))
      if (job.status === 'completed' && job.url) {
        setStatus(`${format}: ready`)
        const link = Object.assign(document.createElement('a'), { href: job.url, download: '' })
        link.click() // the server sends it as an attachment: the browser saves it
      } else {
        setStatus(`${format} failed: ${job.error?.code} ${job.error?.detail}`)
      }
    } catch (error) {
      setStatus(`${format} failed: ${error instanceof Error ? error.message : String(error)}`)
    }
  }
  return (
    <div className="exports">
      <span>Export</span>
      {FORMATS.map((format) => (
        <button key={format} data-export={format} onClick={() => run(format)}>
          {format.toUpperCase()}
        </button>
      ))}
      {status && <span className="status" data-export-status>{status}</span>}
    </div>
  )
}

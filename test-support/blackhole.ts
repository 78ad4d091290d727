// A link that goes silent at a given statement: a paused process or a partition, seen from MySQL.
import net from 'node:net'

/**
 * Forwards a MySQL connection until the client sends `marker`; from then on it forwards nothing
 * either way and closes nothing: the server sees an idle session, the client no answer.
 */
export async function blackholeAfter(marker: string, target: { host: string; port: number }) {
  const sockets: net.Socket[] = []
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host)
    sockets.push(client, upstream)
    let holed = false
    client.on('data', (chunk) => {
      if (holed || chunk.includes(marker)) holed = true
      else upstream.write(chunk)
    })
    upstream.on('data', (chunk) => {
      if (!holed) client.write(chunk)
    })
    for (const socket of [client, upstream]) socket.on('error', () => socket.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const socket of sockets) socket.destroy()
      server.close()
    },
  }
}

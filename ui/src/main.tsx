import './zod-setup.ts'
import './styles/app.css'
import { render } from 'preact'
import { App } from './app.tsx'

const root = document.getElementById('app')
if (root === null) throw new TypeError('Cannot start the UI as the page has no #app element')
render(<App />, root)

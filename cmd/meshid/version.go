package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
)

func newVersionCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go release of this binary",
		Args:  cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if format != "table" && format != "json" {
				return cli.Usagef("-o %q: use table or json", format)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := cli.BuildInfo()
			if format == "json" {
				return output.JSON(cmd.OutOrStdout(), b)
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "meshid", b)
			return err
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "table", "output format: table or json")
	return cmd
}
